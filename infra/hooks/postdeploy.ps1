# azd postdeploy hook (Windows): the same as postdeploy.sh. Creates the Event Grid subscriptions
# on the ACS system topic (infra/eventgrid.bicep) once the functions are deployed.
#   INCOMING_CALL_NUMBERS              JSON array of E.164 numbers (default: all calls)
#   DEPLOY_CALL_RECORDS_SUBSCRIPTION   false to leave out the call_records subscription (default: true)
$ErrorActionPreference = 'Stop'

foreach ($name in 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'AZURE_STORAGE_ACCOUNT_NAME',
                  'EVENTGRID_SYSTEM_TOPIC_NAME', 'EVENTGRID_DEADLETTER_CONTAINER') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        throw "postdeploy: $name is not set; run this through azd (azd up, azd deploy) after azd provision"
    }
}
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    throw 'postdeploy: the Azure CLI (az) is required, logged in to the same subscription'
}

$numbers = if ($env:INCOMING_CALL_NUMBERS) { $env:INCOMING_CALL_NUMBERS } else { '[]' }
$callRecords = if ($env:DEPLOY_CALL_RECORDS_SUBSCRIPTION) { $env:DEPLOY_CALL_RECORDS_SUBSCRIPTION } else { 'true' }

$functions = @('incoming_call', 'recording_file_status')
if ($callRecords -eq 'true') { $functions += 'call_records' }

foreach ($fn in $functions) {
    $tries = 0
    while ($true) {
        az functionapp function show --resource-group $env:AZURE_RESOURCE_GROUP --name $env:AZURE_FUNCTION_APP_NAME `
            --function-name $fn --query name --output tsv 2>$null | Out-Null
        if ($LASTEXITCODE -eq 0) { break }
        $tries++
        if ($tries -ge 30) { throw "postdeploy: function $fn is not listed on $env:AZURE_FUNCTION_APP_NAME after 5 minutes" }
        Start-Sleep -Seconds 10
    }
}

Write-Host "postdeploy: Event Grid subscriptions on $env:EVENTGRID_SYSTEM_TOPIC_NAME -> $env:AZURE_FUNCTION_APP_NAME"
# A JSON array is passed through a parameters file: native-command quoting of JSON is fragile.
$numbersFile = New-TemporaryFile
@{
    '$schema'      = 'https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#'
    contentVersion = '1.0.0.0'
    parameters     = @{ incomingCallNumbers = @{ value = @($numbers | ConvertFrom-Json) } }
} | ConvertTo-Json -Depth 5 | Set-Content -Path $numbersFile
try {
    az deployment group create `
        --resource-group $env:AZURE_RESOURCE_GROUP `
        --name eventgrid-subscriptions `
        --template-file infra/eventgrid.bicep `
        --parameters "@$numbersFile" `
        --parameters systemTopicName=$env:EVENTGRID_SYSTEM_TOPIC_NAME `
                     functionAppName=$env:AZURE_FUNCTION_APP_NAME `
                     storageAccountName=$env:AZURE_STORAGE_ACCOUNT_NAME `
                     deadLetterContainerName=$env:EVENTGRID_DEADLETTER_CONTAINER `
                     deployCallRecordsSubscription=$callRecords `
        --output none
    if ($LASTEXITCODE -ne 0) { throw 'postdeploy: the Event Grid deployment failed' }
} finally {
    Remove-Item $numbersFile -ErrorAction SilentlyContinue
}
Write-Host 'postdeploy: done'
