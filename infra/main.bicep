// The whole deployment of the ACS call-workflows Function App (see infra/README.md).
// `azd up` provisions this template, deploys the code, then the postdeploy hook deploys
// infra/eventgrid.bicep: the Event Grid subscriptions need the functions to exist.
targetScope = 'subscription'

@description('azd environment name: names the resource group and seeds the resource names.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Region of the resource group and regional resources. Pick one that offers the Flex Consumption plan.')
@minLength(1)
param location string

@description('Region of Azure AI services (TTS and speech recognition); defaults to location.')
param aiServicesLocation string = location

@description('Where ACS stores data at rest, e.g. United States, Europe, UK, Australia.')
param acsDataLocation string = 'United States'

@description('true: only Microsoft Entra ID can call ACS (access keys disabled).')
param acsDisableLocalAuth bool = false

@description('CALLBACK_SECRET: base64 of 32+ random bytes. Default: 72 random bytes made at deployment, a new value each deployment (see infra/README.md, Callback secret).')
// checkov:skip=CKV_AZURE_131:The default is not hardcoded: newGuid() makes a new random value at each deployment (the pattern ARM's secure-parameter rule allows); it goes only into Key Vault.
@secure()
param callbackSecret string = base64('${newGuid()}${newGuid()}')

@description('JSON routing rules for IncomingCall (ROUTING_RULES, see README.md, Routing incoming calls).')
param routingRules object = {
  rules: []
  default: {
    type: 'answer'
    flow: 'customer_service'
  }
}

@description('Flows by name (FLOWS); empty: the flows file shipped with the app (FLOWS_FILE).')
param flows object = {}

@description('When to record calls (RECORDING_MODE).')
@allowed([
  'off'
  'on_connect'
  'after_consent'
  'on_demand'
])
param recordingMode string = 'off'

@description('Delete a recording from ACS once its copy is verified (RECORDING_DELETE_AFTER_COPY).')
param recordingDeleteAfterCopy bool = false

@description('copy: the app copies recordings from ACS; byos: ACS writes them into the QA container itself.')
@allowed([
  'copy'
  'byos'
])
param recordingStorage string = 'copy'

@description('Log level of the app (LOG_LEVEL).')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

@description('Days after which a QA recording copy moves to the Cool tier (0: never).')
@minValue(0)
param recordingsCoolAfterDays int = 30

@description('Days after which a QA recording copy is deleted (0: never).')
@minValue(0)
param recordingsDeleteAfterDays int = 365

@description('Storage redundancy. Geo-redundant by default: the account holds the QA recordings.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_GRS'

@description('Most instances the Function App scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Always-ready instances for callbacks and incoming_call (no cold start when answering; billed while idle).')
@minValue(0)
param alwaysReadyInstances int = 0

@description('Spread the Function App across availability zones (regions where Flex Consumption offers it).')
param zoneRedundant bool = false

@description('Send Functions host telemetry with Microsoft Entra ID (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).')
param appInsightsEntraAuth bool = false

@description('Days Log Analytics keeps data.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Key Vault purge protection (irreversible; keep on for production).')
param keyVaultPurgeProtection bool = true

var tags = {
  'azd-env-name': environmentName
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))

// Names the code expects by default (core/settings.py): the settings are set to these anyway.
var stateTableName = 'callstate'
var eventsTableName = 'callevents'
var recordsTableName = 'callrecords'
var outboundTableName = 'outbound'
var recordingsContainerName = 'qa-recordings'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    redundancy: storageSkuName
    deploymentContainerName: deploymentContainerName
    recordingsContainerName: recordingsContainerName
    deadLetterContainerName: deadLetterContainerName
    stateTableName: stateTableName
    eventsTableName: eventsTableName
    recordsTableName: recordsTableName
    outboundTableName: outboundTableName
    recordingsCoolAfterDays: recordingsCoolAfterDays
    recordingsDeleteAfterDays: recordingsDeleteAfterDays
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    callbackSecret: callbackSecret
    enablePurgeProtection: keyVaultPurgeProtection
  }
}

module communication 'modules/communication.bicep' = {
  name: 'communication'
  scope: rg
  params: {
    name: 'acs-${resourceToken}'
    dataLocation: acsDataLocation
    systemTopicName: 'evgt-acs-${resourceToken}'
    tags: tags
    disableLocalAuth: acsDisableLocalAuth
  }
}

module aiServices 'modules/aiservices.bicep' = {
  name: 'aiservices'
  scope: rg
  params: {
    name: 'ai-${resourceToken}'
    location: aiServicesLocation
    tags: tags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    acsPrincipalId: communication.outputs.principalId
    systemTopicPrincipalId: communication.outputs.systemTopicPrincipalId
    storageAccountName: storage.outputs.name
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    recordingsContainerName: storage.outputs.recordingsContainerName
    recordingStorage: recordingStorage
    keyVaultName: keyVault.outputs.name
    callbackSecretName: keyVault.outputs.callbackSecretName
    acsName: communication.outputs.name
    aiServicesName: aiServices.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    appInsightsEntraAuth: appInsightsEntraAuth
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: 'func-${resourceToken}'
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    recordingsContainerName: storage.outputs.recordingsContainerName
    stateTableName: storage.outputs.stateTableName
    eventsTableName: storage.outputs.eventsTableName
    recordsTableName: storage.outputs.recordsTableName
    outboundTableName: storage.outputs.outboundTableName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    callbackSecretName: keyVault.outputs.callbackSecretName
    acsName: communication.outputs.name
    aiServicesName: aiServices.outputs.name
    maximumInstanceCount: maximumInstanceCount
    alwaysReadyInstances: alwaysReadyInstances
    zoneRedundant: zoneRedundant
    appInsightsEntraAuth: appInsightsEntraAuth
    routingRules: routingRules
    flows: flows
    recordingMode: recordingMode
    recordingDeleteAfterCopy: recordingDeleteAfterCopy
    recordingStorage: recordingStorage
    logLevel: logLevel
  }
  // The app starts resolving its Key Vault reference and reaching storage at once: grant first.
  dependsOn: [
    roles
  ]
}

// Outputs become azd environment values (the postdeploy hook reads them). No key, connection
// string or secret is output.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output EVENTGRID_SYSTEM_TOPIC_NAME string = communication.outputs.systemTopicName
output EVENTGRID_DEADLETTER_CONTAINER string = storage.outputs.deadLetterContainerName
output ACS_RESOURCE_NAME string = communication.outputs.name
output ACS_ENDPOINT string = communication.outputs.endpoint
output COGNITIVE_SERVICES_ENDPOINT string = aiServices.outputs.endpoint
output CALLBACK_BASE_URL string = functionApp.outputs.callbackBaseUrl
