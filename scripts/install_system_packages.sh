#!/usr/bin/env bash
# The programs medseg's tests drive that pip cannot install: Debian's headless Chromium and its ChromeDriver
# (the interactive page's browser test), the Orthanc PACS with its DICOMweb plugin (the DICOMweb round trip),
# dicom3tools' dciodvfy (the DICOM standard's checker of the SEG and RTSTRUCT objects medseg writes) and
# plastimatch (an RT toolkit, the peer reader of medseg's RTSTRUCT).
# Installs with apt-get what is missing (as root, or through sudo); does nothing when everything is there.
set -euo pipefail
ORTHANC_DICOMWEB_PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
# "what must exist|the Debian package that provides it"
REQUIRED=(
    "chromium|chromium"
    "chromedriver|chromium-driver"
    "Orthanc|orthanc"
    "$ORTHANC_DICOMWEB_PLUGIN|orthanc-dicomweb"
    "dciodvfy|dicom3tools"
    "plastimatch|plastimatch"
)
present() {  # a program on PATH (also /usr/sbin, where Debian puts Orthanc) or a file path
    case "$1" in
        /*) [ -e "$1" ] ;;
        *) command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] ;;
    esac
}
missing=()
for entry in "${REQUIRED[@]}"; do
    present "${entry%%|*}" || missing+=("${entry#*|}")
done
if [ ${#missing[@]} = 0 ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null; then
    SUDO="sudo"
else
    echo "error: ${missing[*]} missing and this user cannot install them" \
         "(fix: as root run: apt-get install -y ${missing[*]})" >&2
    exit 2
fi
if ! command -v apt-get >/dev/null; then
    echo "error: ${missing[*]} missing and apt-get is not available" \
         "(fix: install Chromium with a matching ChromeDriver as /usr/bin/chromium and /usr/bin/chromedriver," \
         "and Orthanc with its DICOMweb plugin as $ORTHANC_DICOMWEB_PLUGIN)" >&2
    exit 2
fi
$SUDO apt-get update -qq
# policy-rc.d or no systemd: the orthanc package's service is not started (the tests start their own Orthanc)
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
for entry in "${REQUIRED[@]}"; do
    present "${entry%%|*}" || { echo "error: ${entry%%|*} still missing after installing ${entry#*|}" >&2; exit 2; }
done
