#!/bin/sh
# azd postdeploy hook: create the Event Grid subscriptions on the ACS system topic
# (infra/eventgrid.bicep). It runs after `azd deploy` because an AzureFunction endpoint is
# validated against the deployed function. azd passes main.bicep's outputs and its own values
# (AZURE_SUBSCRIPTION_ID) as environment variables; optional settings come from `azd env set`:
#   INCOMING_CALL_NUMBERS              JSON array of E.164 numbers, e.g. '["+14255550100"]' (default: all calls)
#   DEPLOY_CALL_RECORDS_SUBSCRIPTION   false to leave out the call_records subscription (default: true)
#   POSTDEPLOY_RETRY_SECONDS           pause between attempts (default 10): the functions are looked for
#                                      30 times, that far apart; the Event Grid deployment is tried 5 times,
#                                      after 1, 2, 4 and 8 times that pause
# Every az call names the subscription: with several subscriptions logged in, az's default one may
# not be the one azd deployed to.
set -eu

for name in AZURE_SUBSCRIPTION_ID AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_STORAGE_ACCOUNT_NAME \
    EVENTGRID_SYSTEM_TOPIC_NAME EVENTGRID_DEADLETTER_CONTAINER; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "postdeploy: $name is not set; run this through azd (azd up, azd deploy) after azd provision" >&2
    exit 1
  fi
done
command -v az >/dev/null 2>&1 || { echo "postdeploy: the Azure CLI (az) is required, logged in to the same tenant" >&2; exit 1; }

numbers="${INCOMING_CALL_NUMBERS:-[]}"
call_records="${DEPLOY_CALL_RECORDS_SUBSCRIPTION:-true}"
pause="${POSTDEPLOY_RETRY_SECONDS:-10}"
case "$pause" in
  ''|*[!0-9]*) echo "postdeploy: POSTDEPLOY_RETRY_SECONDS must be a whole number of seconds" >&2; exit 1 ;;
esac

functions="incoming_call recording_file_status"
if [ "$call_records" = "true" ]; then
  functions="$functions call_records"
fi

# az's error output of the last call, shown when the hook gives up.
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
show_last_error() {
  echo "postdeploy: the last az error:" >&2
  sed -e 's/^/  /' "$errors" >&2
}

# The resource group, in the subscription azd deployed to: a wrong subscription or login fails here,
# at once and with az's own message, instead of five minutes of "function not found".
if ! az group show --subscription "$AZURE_SUBSCRIPTION_ID" --name "$AZURE_RESOURCE_GROUP" \
    --query name --output tsv >/dev/null 2>"$errors"; then
  echo "postdeploy: resource group $AZURE_RESOURCE_GROUP not found in subscription $AZURE_SUBSCRIPTION_ID" >&2
  show_last_error
  exit 1
fi

# The host indexes the functions shortly after the package lands: wait for each one.
for fn in $functions; do
  tries=0
  until az functionapp function show --subscription "$AZURE_SUBSCRIPTION_ID" \
      --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
      --function-name "$fn" --query name --output tsv >/dev/null 2>"$errors"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
      echo "postdeploy: function $fn is not listed on $AZURE_FUNCTION_APP_NAME after 30 tries, $pause s apart" >&2
      show_last_error
      exit 1
    fi
    sleep "$pause"
  done
done

# Creating an AzureFunction endpoint fails now and then while Event Grid lists the new host's keys:
# try again, waiting twice as long each time.
echo "postdeploy: Event Grid subscriptions on $EVENTGRID_SYSTEM_TOPIC_NAME -> $AZURE_FUNCTION_APP_NAME"
attempt=1
wait_for="$pause"
until az deployment group create \
    --subscription "$AZURE_SUBSCRIPTION_ID" \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --name eventgrid-subscriptions \
    --template-file infra/eventgrid.bicep \
    --parameters \
      systemTopicName="$EVENTGRID_SYSTEM_TOPIC_NAME" \
      functionAppName="$AZURE_FUNCTION_APP_NAME" \
      storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
      deadLetterContainerName="$EVENTGRID_DEADLETTER_CONTAINER" \
      incomingCallNumbers="$numbers" \
      deployCallRecordsSubscription="$call_records" \
    --output none 2>"$errors"; do
  if [ "$attempt" -ge 5 ]; then
    echo "postdeploy: the Event Grid deployment failed $attempt times" >&2
    show_last_error
    exit 1
  fi
  echo "postdeploy: the Event Grid deployment failed (attempt $attempt of 5); trying again in $wait_for s:" >&2
  grep . "$errors" | tail -n 1 | sed -e 's/^/  /' >&2 || true
  sleep "$wait_for"
  attempt=$((attempt + 1))
  wait_for=$((wait_for * 2))
done
echo "postdeploy: done"
