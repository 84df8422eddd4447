#!/usr/bin/env bash
# Install the Debian packages streamproc's demo and tests use, if any is missing:
#   flite           - English speech for the demo and tests (voices slt, kal16, awb, rms)
#   espeak-ng, sox  - Korean speech; convert call audio (8 kHz μ-law phone line)
#   prometheus      - promtool and a real Prometheus server for the metrics tests
#   chromium        - the real browser the dashboard tests drive with Playwright
#   fonts-nanum     - Korean glyphs, so dashboard screenshots of Korean transcripts are legible
#   default-jre-headless, maven - run Apache Kafka 3.9 from Maven Central jars (tests/kafka/pom.xml)
#   prometheus-alertmanager - a real Alertmanager (and amtool) for the alert delivery test
#   nodejs, npm     - the reference AsyncAPI parser that validates docs/asyncapi.yaml (tests/asyncapi)
#   libfst-tools, libfst22-plugins-base - OpenFst's tools with the lookahead and ngram FST types, for
#                     `streamproc build-static-graph` (a static-graph copy of a Vosk lookahead model)
set -euo pipefail
need=()
command -v flite >/dev/null || need+=(flite)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v promtool >/dev/null || need+=(prometheus)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -d /usr/share/fonts/truetype/nanum ] || need+=(fonts-nanum)
command -v java >/dev/null || need+=(default-jre-headless)
command -v mvn >/dev/null || need+=(maven)
[ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v fstcompose >/dev/null || need+=(libfst-tools)
compgen -G '/usr/lib/*/fst/*/ngram-fst.so' >/dev/null || need+=(libfst22-plugins-base)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "please install as root: apt-get install -y ${need[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
