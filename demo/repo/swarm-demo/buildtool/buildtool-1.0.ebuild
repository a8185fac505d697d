EAPI=8
DESCRIPTION="build-time-only tool that writes scripts"
HOMEPAGE="https://example.invalid"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
S="${WORKDIR}"
src_compile() { printf '#!/bin/sh\necho "#!/bin/sh"\necho "cat \\"$1\\""\n' > swarm-mkscript || die; }
src_install() { dobin swarm-mkscript; }
