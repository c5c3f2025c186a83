# Headless Chromium and its WebDriver, for the browser tests
# (crates/gistfans/tests/browser.rs). Sourced by services.sh; not run on its own.
#
# Debian's packages: `chromium` (/usr/bin/chromium) and `chromium-driver`
# (/usr/bin/chromedriver), which come from the same source package, so the
# driver always matches the browser. Nothing is started here: each test
# starts its own chromedriver on a free port and stops it by its pid.

# Installs both packages when either binary is missing.
chromium_ensure() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    return 0
  fi
  echo "services: installing Chromium and chromedriver (Debian's chromium, chromium-driver)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
}

chromium_version() { chromium --version 2>/dev/null | awk '{print $2}'; }
