#!/bin/sh
# Debian packages the test suite needs, installed only when missing:
#   xvfb                      an X server for the napari GUI tests (pytest-xvfb starts it)
#   libxcb-*, libxkbcommon-x11-0, libgl1, libegl1, libfontconfig1, libdbus-1-3
#                             what Qt's xcb platform plugin loads (Qt 6: libxcb-cursor0 too)
#   chromium                  headless browser that checks the batch report.html
set -e
PKGS="xvfb libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
      libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-xkb1
      libxcb-cursor0 libgl1 libegl1 libfontconfig1 libdbus-1-3 chromium"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing Debian packages:$missing"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
