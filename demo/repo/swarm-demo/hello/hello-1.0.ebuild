EAPI=8
DESCRIPTION="says hello with libgreet's greeting"
HOMEPAGE="https://example.invalid"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
IUSE="shout"
RDEPEND="swarm-demo/libgreet[unicode]"
DEPEND="${RDEPEND}"
BDEPEND="swarm-demo/buildtool"
S="${WORKDIR}"
src_compile() {
	# buildtool is a build-time-only dependency: it writes the script.
	# The script finds the greeting beside itself, so it works in any prefix.
	"${BROOT}"/usr/bin/swarm-mkscript '$(dirname "$0")/../share/libgreet/greeting' > swarm-hello || die
	if use shout; then
		sed -i 's/^cat \(.*\)$/cat \1 | tr a-z A-Z/' swarm-hello || die
	fi
	echo "echo 'hello-${PV}'" >> swarm-hello || die
}
src_install() { dobin swarm-hello; }
