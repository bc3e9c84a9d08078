# azd postdeploy hook (Windows): the same as postdeploy.sh. Creates the Event Grid subscriptions
# on the ACS system topic (infra/eventgrid.bicep) once the functions are deployed.
#   INCOMING_CALL_NUMBERS              JSON array of E.164 numbers (default: all calls)
#   DEPLOY_CALL_RECORDS_SUBSCRIPTION   false to leave out the call_records subscription (default: true)
#   POSTDEPLOY_RETRY_SECONDS           pause between attempts (default 10): the functions are looked for
#                                      30 times, that far apart; the Event Grid deployment is tried 5 times,
#                                      after 1, 2, 4 and 8 times that pause
# Every az call names the subscription (AZURE_SUBSCRIPTION_ID, from azd): with several subscriptions
# logged in, az's default one may not be the one azd deployed to.
$ErrorActionPreference = 'Stop'

foreach ($name in 'AZURE_SUBSCRIPTION_ID', 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME',
                  'AZURE_STORAGE_ACCOUNT_NAME', 'EVENTGRID_SYSTEM_TOPIC_NAME', 'EVENTGRID_DEADLETTER_CONTAINER') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        throw "postdeploy: $name is not set; run this through azd (azd up, azd deploy) after azd provision"
    }
}
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    throw 'postdeploy: the Azure CLI (az) is required, logged in to the same tenant'
}

$numbers = if ($env:INCOMING_CALL_NUMBERS) { $env:INCOMING_CALL_NUMBERS } else { '[]' }
$callRecords = if ($env:DEPLOY_CALL_RECORDS_SUBSCRIPTION) { $env:DEPLOY_CALL_RECORDS_SUBSCRIPTION } else { 'true' }
$pauseText = if ($env:POSTDEPLOY_RETRY_SECONDS) { $env:POSTDEPLOY_RETRY_SECONDS } else { '10' }
if ($pauseText -notmatch '^[0-9]+$') { throw 'postdeploy: POSTDEPLOY_RETRY_SECONDS must be a whole number of seconds' }
$pause = [int]$pauseText

$functions = @('incoming_call', 'recording_file_status')
if ($callRecords -eq 'true') { $functions += 'call_records' }

# Runs az in the subscription azd deployed to. Returns whether it succeeded; its error output is
# kept in $script:azError, shown when the hook gives up.
$script:azError = ''
function Invoke-Az([string[]] $Arguments) {
    $ErrorActionPreference = 'Continue'
    $output = & az @Arguments --subscription $env:AZURE_SUBSCRIPTION_ID 2>&1
    $succeeded = $LASTEXITCODE -eq 0
    $script:azError = ($output | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] } |
        ForEach-Object { $_.ToString() }) -join [Environment]::NewLine
    return $succeeded
}

function Exit-WithAzError([string] $Message) {
    [Console]::Error.WriteLine($Message)
    [Console]::Error.WriteLine('postdeploy: the last az error:')
    foreach ($line in ($script:azError -split "`r?`n")) { [Console]::Error.WriteLine("  $line") }
    exit 1
}

# The resource group, in the subscription azd deployed to: a wrong subscription or login fails here,
# at once and with az's own message, instead of five minutes of "function not found".
if (-not (Invoke-Az @('group', 'show', '--name', $env:AZURE_RESOURCE_GROUP, '--query', 'name', '--output', 'tsv'))) {
    Exit-WithAzError "postdeploy: resource group $env:AZURE_RESOURCE_GROUP not found in subscription $env:AZURE_SUBSCRIPTION_ID"
}

# The host indexes the functions shortly after the package lands: wait for each one.
foreach ($fn in $functions) {
    $tries = 0
    while (-not (Invoke-Az @('functionapp', 'function', 'show', '--resource-group', $env:AZURE_RESOURCE_GROUP,
                             '--name', $env:AZURE_FUNCTION_APP_NAME, '--function-name', $fn,
                             '--query', 'name', '--output', 'tsv'))) {
        $tries++
        if ($tries -ge 30) {
            Exit-WithAzError "postdeploy: function $fn is not listed on $env:AZURE_FUNCTION_APP_NAME after 30 tries, $pause s apart"
        }
        Start-Sleep -Seconds $pause
    }
}

# Creating an AzureFunction endpoint fails now and then while Event Grid lists the new host's keys:
# try again, waiting twice as long each time.
Write-Host "postdeploy: Event Grid subscriptions on $env:EVENTGRID_SYSTEM_TOPIC_NAME -> $env:AZURE_FUNCTION_APP_NAME"
# A JSON array is passed through a parameters file: native-command quoting of JSON is fragile.
$numbersFile = New-TemporaryFile
@{
    '$schema'      = 'https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#'
    contentVersion = '1.0.0.0'
    parameters     = @{ incomingCallNumbers = @{ value = @($numbers | ConvertFrom-Json) } }
} | ConvertTo-Json -Depth 5 | Set-Content -Path $numbersFile
try {
    $deployment = @(
        'deployment', 'group', 'create',
        '--resource-group', $env:AZURE_RESOURCE_GROUP,
        '--name', 'eventgrid-subscriptions',
        '--template-file', 'infra/eventgrid.bicep',
        '--parameters', "@$numbersFile",
        '--parameters', "systemTopicName=$env:EVENTGRID_SYSTEM_TOPIC_NAME",
        "functionAppName=$env:AZURE_FUNCTION_APP_NAME",
        "storageAccountName=$env:AZURE_STORAGE_ACCOUNT_NAME",
        "deadLetterContainerName=$env:EVENTGRID_DEADLETTER_CONTAINER",
        "deployCallRecordsSubscription=$callRecords",
        '--output', 'none'
    )
    $attempt = 1
    $waitFor = $pause
    while (-not (Invoke-Az $deployment)) {
        if ($attempt -ge 5) {
            Exit-WithAzError "postdeploy: the Event Grid deployment failed $attempt times"
        }
        $last = $script:azError -split "`r?`n" | Where-Object { $_ } | Select-Object -Last 1
        [Console]::Error.WriteLine("postdeploy: the Event Grid deployment failed (attempt $attempt of 5); trying again in $waitFor s:")
        [Console]::Error.WriteLine("  $last")
        Start-Sleep -Seconds $waitFor
        $attempt++
        $waitFor *= 2
    }
} finally {
    Remove-Item $numbersFile -ErrorAction SilentlyContinue
}
Write-Host 'postdeploy: done'
