EAPI=8
DESCRIPTION="prints a banner"
HOMEPAGE="https://example.invalid"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
S="${WORKDIR}"
src_compile() { printf '#!/bin/sh\necho "=== build-swarm ==="\n' > swarm-banner || die; }
src_install() { dobin swarm-banner; }
