EAPI=8
DESCRIPTION="message of the day: banner and fortune"
HOMEPAGE="https://example.invalid"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
RDEPEND="swarm-demo/banner swarm-demo/fortune"
S="${WORKDIR}"
src_compile() { printf '#!/bin/sh\nswarm-banner\nswarm-fortune\n' > swarm-motd || die; }
src_install() { dobin swarm-motd; }
