EAPI=8
DESCRIPTION="prints a fortune through swarm-hello"
HOMEPAGE="https://example.invalid"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
RDEPEND="swarm-demo/hello"
S="${WORKDIR}"
src_compile() {
	printf '#!/bin/sh\nswarm-hello\necho "fortune: a binary saved is a compile earned"\n' > swarm-fortune || die
}
src_install() { dobin swarm-fortune; }
