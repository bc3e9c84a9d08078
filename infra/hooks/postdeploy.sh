#!/bin/sh
# azd postdeploy hook: create the Event Grid subscriptions on the ACS system topic
# (infra/eventgrid.bicep). It runs after `azd deploy` because an AzureFunction endpoint is
# validated against the deployed function. azd passes main.bicep's outputs as environment
# variables; optional settings come from `azd env set`:
#   INCOMING_CALL_NUMBERS              JSON array of E.164 numbers, e.g. '["+14255550100"]' (default: all calls)
#   DEPLOY_CALL_RECORDS_SUBSCRIPTION   false to leave out the call_records subscription (default: true)
set -eu

for name in AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_STORAGE_ACCOUNT_NAME \
    EVENTGRID_SYSTEM_TOPIC_NAME EVENTGRID_DEADLETTER_CONTAINER; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "postdeploy: $name is not set; run this through azd (azd up, azd deploy) after azd provision" >&2
    exit 1
  fi
done
command -v az >/dev/null 2>&1 || { echo "postdeploy: the Azure CLI (az) is required, logged in to the same subscription" >&2; exit 1; }

numbers="${INCOMING_CALL_NUMBERS:-[]}"
call_records="${DEPLOY_CALL_RECORDS_SUBSCRIPTION:-true}"

functions="incoming_call recording_file_status"
if [ "$call_records" = "true" ]; then
  functions="$functions call_records"
fi

# The host indexes the functions shortly after the package lands: wait for each one.
for fn in $functions; do
  tries=0
  until az functionapp function show --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
      --function-name "$fn" --query name --output tsv >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
      echo "postdeploy: function $fn is not listed on $AZURE_FUNCTION_APP_NAME after 5 minutes" >&2
      exit 1
    fi
    sleep 10
  done
done

echo "postdeploy: Event Grid subscriptions on $EVENTGRID_SYSTEM_TOPIC_NAME -> $AZURE_FUNCTION_APP_NAME"
az deployment group create \
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
  --output none
echo "postdeploy: done"
