#!/bin/sh
# Brings the console's browser libraries into third_party/, unmodified,
# with their licences: npm ci installs exactly what package-lock.json
# pins, then the files the page loads are copied. Run by `go generate
# ./console`; the result is committed, so building needs neither npm nor
# the network.
set -eu
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund
rm -rf third_party
mkdir -p third_party/uplot
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css node_modules/uplot/LICENSE third_party/uplot/
node -e 'console.log(require("./node_modules/uplot/package.json").version)' > third_party/uplot/VERSION
rm -rf node_modules
