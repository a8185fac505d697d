"""Generate the demo's bundled sample: an ``emerge -puDN --tree @world`` of a desktop-ish
Gentoo box (real package names) and the compile times of each package on 8 cores.

Deterministic; the outputs are committed (demo/sample-world.txt, demo/sample-times.json).
Run: python -m demo.make_sample
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

# (cpv, seconds on 8 cores, deps by index name) — a layered world: toolchain, base libraries,
# middle libraries, applications. Times are scaled down in the demo by FAKE_EMERGE_SPEED.
BASE = [
    ("sys-libs/zlib-1.3.1-r1", 20), ("app-arch/xz-utils-5.6.3", 25), ("app-arch/zstd-1.5.6-r1", 40),
    ("app-arch/bzip2-1.0.8-r5", 10), ("sys-libs/ncurses-6.5_p20240601", 60),
    ("sys-libs/readline-8.2_p13-r1", 25), ("dev-libs/gmp-6.3.0-r1", 60), ("dev-libs/mpfr-4.2.1", 45),
    ("dev-libs/mpc-1.3.1", 20), ("sys-devel/binutils-2.43-r1", 240), ("sys-libs/glibc-2.40-r5", 420),
    ("sys-devel/gcc-14.2.1_p20241116", 1800), ("dev-libs/openssl-3.3.2-r1", 300),
    ("dev-libs/libffi-3.4.6-r2", 15), ("dev-libs/expat-2.6.4", 15), ("sys-apps/util-linux-2.40.2", 120),
    ("dev-lang/perl-5.40.0-r1", 240), ("dev-lang/python-3.12.8", 480), ("dev-build/cmake-3.30.6", 200),
    ("dev-build/meson-1.6.1", 10), ("dev-build/ninja-1.12.1-r1", 20), ("dev-libs/libxml2-2.13.5", 60),
    ("dev-libs/glib-2.82.4", 180), ("sys-apps/dbus-1.15.8", 45), ("dev-libs/icu-76.1", 360),
    ("llvm-core/llvm-19.1.5", 2400), ("llvm-core/clang-19.1.5", 2200), ("dev-lang/rust-1.83.0", 3600),
]
MIDDLE = [
    "media-libs/libpng-1.6.44", "media-libs/libjpeg-turbo-3.0.4", "media-libs/libwebp-1.4.0",
    "media-libs/tiff-4.7.0", "media-libs/freetype-2.13.3", "media-libs/fontconfig-2.15.0",
    "media-libs/harfbuzz-10.1.0", "x11-libs/libX11-1.8.10", "x11-libs/libxcb-1.17.0",
    "x11-libs/libXext-1.3.6", "x11-libs/libXrender-0.9.11", "x11-libs/libXi-1.8.2",
    "x11-libs/libXfixes-6.0.1", "x11-libs/libXrandr-1.5.4", "x11-libs/libxkbcommon-1.7.0",
    "x11-libs/pixman-0.44.2", "x11-libs/cairo-1.18.2-r1", "x11-libs/pango-1.54.0",
    "x11-libs/gdk-pixbuf-2.42.12", "x11-libs/gtk+-3.24.43", "dev-libs/atk-2.38.0",
    "media-libs/mesa-24.2.8", "x11-libs/libdrm-2.4.124", "dev-libs/wayland-1.23.1",
    "media-libs/alsa-lib-1.2.12", "media-video/pipewire-1.2.7", "media-libs/libsndfile-1.2.2-r2",
    "media-sound/lame-3.100-r3", "media-libs/opus-1.5.2", "media-libs/libvorbis-1.3.7-r2",
    "media-libs/libogg-1.3.5-r1", "media-video/ffmpeg-6.1.2-r1", "media-libs/libass-0.17.3",
    "dev-libs/nss-3.107", "dev-libs/nspr-4.36", "net-libs/nghttp2-1.64.0", "net-misc/curl-8.11.1",
    "dev-libs/libgcrypt-1.11.0-r2", "dev-libs/libgpg-error-1.51", "app-crypt/gnupg-2.4.7",
    "dev-libs/libtasn1-4.19.0", "net-libs/gnutls-3.8.8", "dev-db/sqlite-3.47.2",
    "sys-libs/libcap-2.71", "sys-apps/systemd-utils-255.13", "dev-libs/libevent-2.1.12-r1",
    "dev-libs/boost-1.86.0-r1", "dev-qt/qtbase-6.8.1", "dev-qt/qtdeclarative-6.8.1",
    "dev-qt/qtsvg-6.8.1", "dev-qt/qttools-6.8.1", "kde-frameworks/kcoreaddons-6.9.0",
    "kde-frameworks/ki18n-6.9.0", "kde-frameworks/kconfig-6.9.0", "dev-python/setuptools-75.6.0",
    "dev-python/pyyaml-6.0.2", "dev-python/certifi-3024.7.22", "dev-python/urllib3-2.2.3",
    "dev-python/requests-2.32.3", "dev-python/jinja2-3.1.4", "dev-python/markupsafe-3.0.2",
    "dev-python/cython-3.0.11-r1", "dev-python/numpy-2.2.0", "dev-libs/libunistring-1.3",
    "net-dns/libidn2-2.3.7", "net-libs/libpsl-0.21.5", "app-text/poppler-24.12.0",
    "media-gfx/graphite2-1.3.14_p20210810-r3", "dev-libs/fribidi-1.0.16",
    "media-libs/lcms-2.16-r1", "media-libs/openjpeg-2.5.3", "sys-libs/libseccomp-2.5.5-r1",
    "dev-libs/libpcre2-10.44-r1", "dev-libs/json-c-0.18", "net-misc/openssh-9.9_p1-r1",
    "app-misc/tmux-3.5a", "app-shells/bash-completion-2.14.0", "dev-vcs/git-2.47.1",
    "app-editors/vim-core-9.1.0866", "app-text/asciidoc-10.2.1", "sys-apps/man-db-2.13.0",
]
APPS = [
    "app-editors/vim-9.1.0866", "www-client/firefox-128.5.2", "www-client/chromium-131.0.6778.139",
    "media-video/mpv-0.39.0-r1", "media-gfx/gimp-2.10.38-r2", "app-office/libreoffice-24.8.3.2",
    "kde-apps/konsole-24.11.1", "kde-apps/dolphin-24.11.1", "mail-client/thunderbird-128.5.2",
    "media-sound/audacity-3.6.4", "net-p2p/transmission-4.0.6-r3", "app-text/zathura-0.5.8",
    "games-emulation/dolphin-2412", "media-gfx/inkscape-1.4-r1", "sys-process/htop-3.3.0",
    "app-admin/sudo-1.9.16_p2", "net-misc/wget-1.25.0", "app-portage/gentoolkit-0.6.8",
    "app-portage/eix-0.36.7", "sys-apps/portage-3.0.66.1-r1", "dev-util/ccache-4.10.2",
    "x11-terms/alacritty-0.14.0", "media-gfx/imagemagick-7.1.1.41", "dev-lang/go-1.23.4",
    "net-vpn/wireguard-tools-1.0.20210914-r1", "app-containers/podman-5.3.1",
]
BIG = {"www-client/chromium-131.0.6778.139": 9000, "app-office/libreoffice-24.8.3.2": 5400,
       "www-client/firefox-128.5.2": 3000, "mail-client/thunderbird-128.5.2": 2700,
       "dev-qt/qtbase-6.8.1": 900, "dev-qt/qtdeclarative-6.8.1": 700, "dev-libs/boost-1.86.0-r1": 800,
       "media-video/ffmpeg-6.1.2-r1": 400, "media-libs/mesa-24.2.8": 600, "dev-lang/go-1.23.4": 500,
       "media-gfx/inkscape-1.4-r1": 900, "x11-libs/gtk+-3.24.43": 400}


def build() -> tuple[str, dict[str, float]]:
    rng = random.Random(2026)
    times: dict[str, float] = {}
    deps: dict[str, list[str]] = {}
    base = [c for c, _ in BASE]
    for c, t in BASE:
        times[c] = float(t)
    for i, c in enumerate(base):
        pool = base[:i]
        deps[c] = sorted(rng.sample(pool, min(len(pool), rng.randint(0, 3)))) if pool else []
    for i, c in enumerate(MIDDLE):
        times[c] = float(BIG.get(c, rng.choice([15, 20, 30, 45, 60, 90, 120, 180])))
        pool = base[:12] + MIDDLE[:i]
        deps[c] = sorted(rng.sample(pool, min(len(pool), rng.randint(1, 4))))
    for c in APPS:
        times[c] = float(BIG.get(c, rng.choice([20, 40, 60, 120, 240, 400])))
        pool = MIDDLE + base
        deps[c] = sorted(rng.sample(pool, rng.randint(2, 6)))
    # Render as --tree: each world package, its deps indented below it, each package shown
    # in full once (later mentions are skipped, as emerge does).
    shown: set[str] = set()
    lines = ["", "These are the packages that would be merged, in reverse order:", "",
             "Calculating dependencies... done!", "Dependency resolution took 12.84 s (backtrack: 0/20).", ""]

    def walk(c: str, depth: int) -> None:
        if c in shown:
            return
        shown.add(c)
        flag = "U" if rng.random() < 0.7 else "N"
        lines.append(f"[ebuild  {'N' if flag == 'N' else ' '}  {'U' if flag == 'U' else ' '}  ] "
                     f"{' ' * depth}{c}::gentoo  USE=\"-doc -test\" 0 KiB")
        for d in deps.get(c, []):
            walk(d, depth + 1)

    for c in APPS:
        walk(c, 0)
    for c in base + MIDDLE:
        walk(c, 0)
    lines += ["", f"Total: {len(shown)} packages ({len(shown)} upgrades), Size of downloads: 0 KiB", ""]
    return "\n".join(lines), {c: times[c] for c in sorted(shown)}


def main() -> None:
    text, times = build()
    (HERE / "sample-world.txt").write_text(text)
    (HERE / "sample-times.json").write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")
    print(f"{len(times)} packages, {sum(times.values()):.0f} s of work on 8 cores")


if __name__ == "__main__":
    main()
