EAPI=8
DESCRIPTION="greeting library (data for swarm-hello)"
HOMEPAGE="https://example.invalid"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
IUSE="+unicode"
S="${WORKDIR}"
src_compile() { echo "hello from libgreet $(usex unicode unicode ascii)" > greeting || die; }
src_install() { insinto /usr/share/libgreet; doins greeting; }
