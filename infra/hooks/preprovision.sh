#!/bin/sh
# azd preprovision hook: make CALLBACK_SECRET once. If the azd environment has no CALLBACK_SECRET,
# generate 48 random bytes (base64) and store them in it (`azd env set`, i.e.
# .azure/<env>/.env on this machine); if it has one, leave it alone. main.bicep takes the value
# as a required parameter (main.parameters.json: ${CALLBACK_SECRET}) and has no random default,
# so a deployment never changes the key by itself: calls in progress keep working across
# `azd provision`. To rotate the key on purpose, see infra/README.md (CALLBACK_SECRET_PREVIOUS).
# The value is never printed.
set -eu

command -v azd >/dev/null 2>&1 || { echo "preprovision: azd is required (this hook runs under azd provision / azd up)" >&2; exit 1; }

# The azd environment is the authority (a CALLBACK_SECRET exported in the shell alone is not
# what main.parameters.json is filled from).
current="$(azd env get-value CALLBACK_SECRET 2>/dev/null || true)"
case "$current" in
  ""|*"not found"*|ERROR*) current="" ;;
esac
if [ -n "$current" ]; then
  echo "preprovision: CALLBACK_SECRET is set in the azd environment; keeping it"
  exit 0
fi

if command -v openssl >/dev/null 2>&1; then
  secret="$(openssl rand -base64 48 | tr -d '\n')"
else
  secret="$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
fi
# 48 bytes are 64 base64 characters: refuse anything shorter (a broken generator).
if [ "${#secret}" -lt 64 ]; then
  echo "preprovision: could not generate CALLBACK_SECRET (need openssl, or /dev/urandom and base64)" >&2
  exit 1
fi
azd env set CALLBACK_SECRET "$secret" >/dev/null
echo "preprovision: generated CALLBACK_SECRET (48 random bytes) and stored it in the azd environment"
