// The whole deployment of the ACS call-workflows Function App (see infra/README.md).
// `azd up` provisions this template, deploys the code, then the postdeploy hook deploys
// infra/eventgrid.bicep: the Event Grid subscriptions need the functions to exist.
targetScope = 'subscription'

@description('azd environment name: names the resource group and seeds the resource names.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Region of the resource group and regional resources: one that offers the Flex Consumption plan (the list of the official Flex Consumption azd quickstart, see infra/README.md). azd offers only these.')
@minLength(1)
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Region of Azure AI services (TTS and speech recognition); defaults to location.')
param aiServicesLocation string = location

@description('Where ACS stores data at rest, e.g. United States, Europe, UK, Australia.')
param acsDataLocation string = 'United States'

@description('true (the default): only Microsoft Entra ID can call ACS, access keys are refused. The app never uses keys in Azure.')
param acsDisableLocalAuth bool = true

@description('CALLBACK_SECRET: base64 of 32+ random bytes, set once in the azd environment (the preprovision hook makes it when unset) and kept across deployments (see infra/README.md, Callback secret). 44 characters at least (32 bytes in base64): an empty or short value fails validation before anything is deployed.')
@secure()
@minLength(44)
param callbackSecret string

@description('CALLBACK_SECRET_PREVIOUS: during a rotation, the key being rotated out (callback URLs signed with it stay valid); empty otherwise (see infra/README.md, Rotating the callback secret).')
@secure()
param callbackSecretPrevious string = ''

@description('Routing rules for IncomingCall as an object (ROUTING_RULES, see docs/routing.md): used only when routingRulesFile is empty.')
param routingRules object = {
  rules: []
  default: {
    type: 'answer'
    flow: 'customer_service'
  }
}

@description('Flows by name (FLOWS); empty: the flows files packaged with the app (flowsFile). Set, it overrides flowsFile entirely.')
param flows object = {}

@description('FLOWS_FILE: the flows packaged with the app, as paths relative to the repository root (the app root) separated by ";": JSON files of flows by name, or folders of them (every *.json file directly inside, except schema.json). Every flow the routing rules answer into must be among them. See infra/README.md, Your own flows and routing rules.')
@minLength(1)
param flowsFile string = 'flows/default.json'

@description('ROUTING_RULES_FILE: path, relative to the repository root (the app root), of a JSON file of routing rules packaged with the app (docs/routing.md). Set, it replaces routingRules (ROUTING_RULES is then not set); empty: routingRules.')
param routingRulesFile string = ''

@description('When to record calls (RECORDING_MODE).')
@allowed([
  'off'
  'on_connect'
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

@description('Comma-separated +prefixes of the phone numbers the app may ring (DIAL_ALLOWED_PREFIXES; + alone: any). The denied list (DIAL_DENIED_PREFIXES) keeps the code\'s default, in modules/functionapp.bicep.')
param dialAllowedPrefixes string = '+1'

@description('Most phone numbers the app dials at a caller\'s request per UTC day (DIAL_DAILY_CAP; 0: none).')
@minValue(0)
param dialDailyCap int = 1000

@description('Comma-separated room ids and group call ids the control API may connect to (CONNECT_ALLOWED_ROOMS).')
param connectAllowedRooms string = ''

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

@description('Redundancy of both storage accounts (host and app data). Geo-redundant by default: the app-data account holds the QA recordings. With zoneRedundant: Standard_ZRS, Standard_GZRS or Standard_RAGZRS.')
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

@description('Spread the Function App across availability zones (regions where Flex Consumption offers it). Not free while idle: the platform then keeps at least 2 always-ready instances in each of the app\'s scale groups (4 groups: 8 instances), billed continuously. Needs a zone-redundant storageSkuName. See infra/README.md, Cost notes.')
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

// A zone-redundant Flex Consumption app needs zone-redundant storage: the host's storage (package,
// AzureWebJobsStorage) in one zone would take the app down with that zone. With zoneRedundant,
// storageSkuName must be a key of this table: any other SKU fails the deployment at validation,
// before anything is created ("property 'Standard_GRS' doesn't exist, available properties are ...").
var zoneRedundantStorageSkus = {
  Standard_ZRS: 'Standard_ZRS'
  Standard_GZRS: 'Standard_GZRS'
  Standard_RAGZRS: 'Standard_RAGZRS'
}
var storageSku = zoneRedundant ? zoneRedundantStorageSkus[storageSkuName] : storageSkuName

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var rotatingCallbackSecret = !empty(callbackSecretPrevious)

// Names the code expects by default (core/platform/settings.py): the settings are set to these anyway.
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

// The app identity: what the app's code does (AZURE_CLIENT_ID).
module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

// The host identity: what the platform does for the app (deployment package, AzureWebJobsStorage,
// Key Vault references, host telemetry).
module hostIdentity 'modules/identity.bicep' = {
  name: 'hostIdentity'
  scope: rg
  params: {
    name: 'id-host-${resourceToken}'
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

// The Functions host's storage: deployment package and AzureWebJobsStorage. No app data.
module hostStorage 'modules/hoststorage.bicep' = {
  name: 'hostStorage'
  scope: rg
  params: {
    name: 'sthost${resourceToken}'
    location: location
    tags: tags
    redundancy: storageSku
    deploymentContainerName: deploymentContainerName
  }
}

// The app's data: tables, QA recordings, Event Grid dead-letters. No package, no host state.
module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    redundancy: storageSku
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
    callbackSecretPrevious: callbackSecretPrevious
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
    hostPrincipalId: hostIdentity.outputs.principalId
    acsPrincipalId: communication.outputs.principalId
    systemTopicPrincipalId: communication.outputs.systemTopicPrincipalId
    hostStorageAccountName: hostStorage.outputs.name
    storageAccountName: storage.outputs.name
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    recordingsContainerName: storage.outputs.recordingsContainerName
    stateTableName: storage.outputs.stateTableName
    eventsTableName: storage.outputs.eventsTableName
    recordsTableName: storage.outputs.recordsTableName
    outboundTableName: storage.outputs.outboundTableName
    recordingStorage: recordingStorage
    keyVaultName: keyVault.outputs.name
    callbackSecretName: keyVault.outputs.callbackSecretName
    callbackSecretPreviousName: keyVault.outputs.callbackSecretPreviousName
    callbackSecretRotation: rotatingCallbackSecret
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
    hostIdentityId: hostIdentity.outputs.id
    hostIdentityClientId: hostIdentity.outputs.clientId
    hostStorageAccountName: hostStorage.outputs.name
    deploymentContainerName: hostStorage.outputs.deploymentContainerName
    storageAccountName: storage.outputs.name
    recordingsContainerName: storage.outputs.recordingsContainerName
    stateTableName: storage.outputs.stateTableName
    eventsTableName: storage.outputs.eventsTableName
    recordsTableName: storage.outputs.recordsTableName
    outboundTableName: storage.outputs.outboundTableName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    callbackSecretName: keyVault.outputs.callbackSecretName
    callbackSecretPreviousName: keyVault.outputs.callbackSecretPreviousName
    callbackSecretRotation: rotatingCallbackSecret
    acsName: communication.outputs.name
    aiServicesName: aiServices.outputs.name
    maximumInstanceCount: maximumInstanceCount
    alwaysReadyInstances: alwaysReadyInstances
    zoneRedundant: zoneRedundant
    appInsightsEntraAuth: appInsightsEntraAuth
    routingRules: routingRules
    routingRulesFile: routingRulesFile
    flows: flows
    flowsFile: flowsFile
    recordingMode: recordingMode
    recordingDeleteAfterCopy: recordingDeleteAfterCopy
    recordingStorage: recordingStorage
    dialAllowedPrefixes: dialAllowedPrefixes
    dialDailyCap: dialDailyCap
    connectAllowedRooms: connectAllowedRooms
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
output AZURE_HOST_STORAGE_ACCOUNT_NAME string = hostStorage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output EVENTGRID_SYSTEM_TOPIC_NAME string = communication.outputs.systemTopicName
output EVENTGRID_DEADLETTER_CONTAINER string = storage.outputs.deadLetterContainerName
output ACS_RESOURCE_NAME string = communication.outputs.name
output ACS_ENDPOINT string = communication.outputs.endpoint
output COGNITIVE_SERVICES_ENDPOINT string = aiServices.outputs.endpoint
output CALLBACK_BASE_URL string = functionApp.outputs.callbackBaseUrl
