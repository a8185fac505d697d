EAPI=8
DESCRIPTION="prints a banner"
HOMEPAGE="https://example.invalid"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
# A diamond: libgreet is also under hello. emerge --tree prints it under one parent only;
# swarmd learns the other edge from the plan of a drone (droned/plan.py, "needs").
RDEPEND="swarm-demo/libgreet"
S="${WORKDIR}"
src_compile() { printf '#!/bin/sh\necho "=== build-swarm ==="\n' > swarm-banner || die; }
src_install() { dobin swarm-banner; }
