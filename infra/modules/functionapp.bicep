// The Function App on the Flex Consumption plan (FC1, Linux, Python 3.13) with its two
// user-assigned identities, and its app settings: exactly the settings the code reads
// (core/platform/settings.py SETTINGS, checked by tests/infra/test_app_settings.py) plus the
// platform's own (identity-based AzureWebJobsStorage, Application Insights, AZURE_CLIENT_ID).
//
// Two identities, two storage accounts:
//   host identity -> what the platform does for the app: the deployment package and
//                    AzureWebJobsStorage in the host account, Key Vault references, host telemetry
//   app identity  -> what the app's code does (AZURE_CLIENT_ID picks it for DefaultAzureCredential):
//                    the QA container and tables of the app-data account, Call Automation

@description('Function App name (globally unique: it is the default host name).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region (one that offers the Flex Consumption plan).')
param location string

@description('Tags for the resources.')
param tags object

@description('Resource id of the app identity (the identity the app\'s code uses).')
param identityId string

@description('Client id of the app identity (AZURE_CLIENT_ID).')
param identityClientId string

@description('Resource id of the host identity (deployment package, AzureWebJobsStorage, Key Vault references).')
param hostIdentityId string

@description('Client id of the host identity (AzureWebJobsStorage__clientId).')
param hostIdentityClientId string

param hostStorageAccountName string
param deploymentContainerName string
param storageAccountName string
param recordingsContainerName string
param stateTableName string
param eventsTableName string
param recordsTableName string
param outboundTableName string
param appInsightsName string
param keyVaultName string
param callbackSecretName string
param callbackSecretPreviousName string

@description('A callback key rotation is in progress: CALLBACK_SECRET_PREVIOUS references the previous key (empty otherwise).')
param callbackSecretRotation bool = false
param acsName string
param aiServicesName string

@description('Most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Always-ready instances for the HTTP group (callbacks) and incoming_call: removes cold starts from answering, billed while idle. 0: none.')
@minValue(0)
param alwaysReadyInstances int = 0

@description('Spread instances across availability zones (only in regions where Flex Consumption offers zone redundancy).')
param zoneRedundant bool = false

@description('Send host telemetry with Microsoft Entra ID (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).')
param appInsightsEntraAuth bool = false

// ---- the app's settings (core/platform/settings.py) ----
@description('Routing rules for IncomingCall (ROUTING_RULES): set only when routingRulesFile is empty.')
param routingRules object

@description('Path of the routing rules file in the package (ROUTING_RULES_FILE); empty: routingRules (ROUTING_RULES) instead.')
param routingRulesFile string = ''

@description('Flows by name (FLOWS); empty: the flows of FLOWS_FILE.')
param flows object = {}

@description('Paths of the flows files and folders in the package, separated by ";" (FLOWS_FILE).')
@minLength(1)
param flowsFile string = 'flows/default.json'

@description('Issuer of callback JWTs (ACS_JWT_ISSUER).')
param acsJwtIssuer string = 'https://acscallautomation.communication.azure.com'

@description('OpenID configuration listing the callback JWT signing keys (ACS_OPENID_CONFIG_URL).')
param acsOpenIdConfigUrl string = 'https://acscallautomation.communication.azure.com/calling/.well-known/acsopenidconfiguration'

@description('When to record (RECORDING_MODE).')
@allowed([
  'off'
  'on_connect'
])
param recordingMode string = 'off'

@description('RECORDING_CHANNEL.')
@allowed([
  'unmixed'
  'mixed'
])
param recordingChannel string = 'unmixed'

@description('RECORDING_CONTENT.')
@allowed([
  'audio'
  'audioVideo'
])
param recordingContent string = 'audio'

@description('RECORDING_FORMAT.')
@allowed([
  'wav'
  'mp3'
  'mp4'
])
param recordingFormat string = 'wav'

@description('Host patterns recordings may be downloaded from (RECORDING_ALLOWED_HOSTS).')
param recordingAllowedHosts string = '*.asm.skype.com,*.asyncgw.teams.microsoft.com,*.ams.gov.teams.microsoft.us'

@description('Delete a recording from ACS once its copy is verified (RECORDING_DELETE_AFTER_COPY).')
param recordingDeleteAfterCopy bool = false

@description('Also write one mono WAV per participant from an unmixed recording (RECORDING_SPLIT_PARTICIPANTS).')
param recordingSplitParticipants bool = true

@description('copy: the app copies recordings from ACS; byos: ACS writes them into the QA container (RECORDING_STORAGE).')
@allowed([
  'copy'
  'byos'
])
param recordingStorage string = 'copy'

@description('Comma-separated +prefixes of the phone numbers the app may ring (DIAL_ALLOWED_PREFIXES; + alone: any).')
param dialAllowedPrefixes string = '+1'

@description('Comma-separated +prefixes the app never rings (DIAL_DENIED_PREFIXES). Default: the code\'s list (NANP premium rate and Caribbean/Atlantic area codes, ITU premium, shared-cost, satellite and international-network codes).')
param dialDeniedPrefixes string = '+1900,+1242,+1246,+1264,+1268,+1284,+1345,+1441,+1473,+1649,+1658,+1664,+1721,+1758,+1767,+1784,+1809,+1829,+1849,+1868,+1869,+1876,+808,+870,+881,+882,+883,+888,+979,+991'

@description('Most phone numbers the app dials at a caller\'s request per UTC day (DIAL_DAILY_CAP; 0: none).')
@minValue(0)
param dialDailyCap int = 1000

@description('Comma-separated room ids and group call ids the control API may connect to (CONNECT_ALLOWED_ROOMS).')
param connectAllowedRooms string = ''

@description('Log level of the app\'s loggers (LOG_LEVEL).')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource callbackSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: callbackSecretName
}

resource callbackSecretPrevious 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: callbackSecretPreviousName
}

resource acs 'Microsoft.Communication/communicationServices@2025-05-01' existing = {
  name: acsName
}

resource aiServices 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: aiServicesName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  // checkov:skip=CKV_AZURE_225:Zone redundancy is a parameter (zoneRedundant, default false): Flex Consumption offers it only in some regions, and a default of true would fail elsewhere.
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

var alwaysReady = alwaysReadyInstances > 0 ? [
  {
    name: 'http'
    instanceCount: alwaysReadyInstances
  }
  {
    name: 'function:incoming_call'
    instanceCount: alwaysReadyInstances
  }
] : []

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17:Client certificates cannot be required: ACS callbacks and Event Grid deliveries present none.
  // checkov:skip=CKV_AZURE_222:ACS callbacks and Event Grid deliveries come from the internet: the app must be public. Callbacks are authenticated by the app (ACS's signed JWT and the per-call token), Event Grid deliveries by the function's system key.
  // checkov:skip=CKV_AZURE_212:numberOfWorkers does not apply to Flex Consumption: the platform scales instances per function group (maximumInstanceCount, alwaysReady).
  // checkov:skip=CKV_AZURE_213:App Service Health check (instance eviction) is not a Flex Consumption feature, and a probe every minute would keep an instance billed. GET /api/health is there for external monitoring (e.g. an availability test).
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
      '${hostIdentityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: hostIdentityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: hostIdentityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReady
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
    }
  }
}

// FTP and basic-auth publishing off: azd deploys with Microsoft Entra ID.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// Platform settings: not read by core/platform/settings.py, read by the Functions host or the SDKs.
// AzureWebJobsStorage is blob only: the app has no queue, Durable or table-based triggers (the
// host's keys and timer/singleton leases are blobs).
var platformSettings = {
  AzureWebJobsStorage__blobServiceUri: hostStorage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: hostIdentityClientId
  // DefaultAzureCredential (core/platform/clients.py, core/platform/tables.py) picks the app identity by this.
  AZURE_CLIENT_ID: identityClientId
}

var entraTelemetrySettings = appInsightsEntraAuth ? {
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${hostIdentityClientId};Authorization=AAD'
} : {}

// The routing rules: from a file packaged with the app (ROUTING_RULES_FILE) or inline (ROUTING_RULES),
// never both (the app refuses both). A setting left out of this collection is removed from the app.
var routingSettings = empty(routingRulesFile) ? {
  ROUTING_RULES: string(routingRules)
} : {
  ROUTING_RULES_FILE: routingRulesFile
}

// The app's settings: one entry per core/platform/settings.py SETTINGS name that is set in Azure.
var appSettings = {
  ACS_ENDPOINT: 'https://${acs.properties.hostName}'
  ACS_RESOURCE_ID: acs.properties.immutableResourceId
  ACS_JWT_ISSUER: acsJwtIssuer
  ACS_OPENID_CONFIG_URL: acsOpenIdConfigUrl
  CALLBACK_BASE_URL: 'https://${functionApp.properties.defaultHostName}/api'
  CALLBACK_SECRET: '@Microsoft.KeyVault(SecretUri=${callbackSecret.properties.secretUriWithVersion})'
  // Only during a rotation; empty otherwise (the app reads an empty value as unset).
  CALLBACK_SECRET_PREVIOUS: callbackSecretRotation ? '@Microsoft.KeyVault(SecretUri=${callbackSecretPrevious.properties.secretUriWithVersion})' : ''
  COGNITIVE_SERVICES_ENDPOINT: aiServices.properties.endpoint
  FLOWS: empty(flows) ? '' : string(flows)
  FLOWS_FILE: flowsFile
  APP_STORAGE__tableServiceUri: storage.properties.primaryEndpoints.table
  APP_STORAGE__blobServiceUri: storage.properties.primaryEndpoints.blob
  STATE_TABLE: stateTableName
  EVENTS_TABLE: eventsTableName
  RECORDS_TABLE: recordsTableName
  OUTBOUND_TABLE: outboundTableName
  RECORDING_MODE: recordingMode
  RECORDING_CHANNEL: recordingChannel
  RECORDING_CONTENT: recordingContent
  RECORDING_FORMAT: recordingFormat
  RECORDINGS_CONTAINER: recordingsContainerName
  RECORDING_ALLOWED_HOSTS: recordingAllowedHosts
  RECORDING_DELETE_AFTER_COPY: recordingDeleteAfterCopy ? 'true' : 'false'
  RECORDING_SPLIT_PARTICIPANTS: recordingSplitParticipants ? 'true' : 'false'
  RECORDING_STORAGE: recordingStorage
  DIAL_ALLOWED_PREFIXES: dialAllowedPrefixes
  DIAL_DENIED_PREFIXES: dialDeniedPrefixes
  DIAL_DAILY_CAP: string(dialDailyCap)
  CONNECT_ALLOWED_ROOMS: connectAllowedRooms
  LOG_LEVEL: logLevel
  // Not a credential: it names the component and its ingestion endpoint (see infra/README.md).
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
}

resource appSettingsConfig 'Microsoft.Web/sites/config@2024-04-01' = {
  // This resource is the app-settings collection (name 'appsettings'). checkov applies its site-config
  // checks to every Microsoft.Web/sites/config resource as if it were 'web' or 'authsettings':
  // checkov:skip=CKV_AZURE_13:False positive (appsettings, not authsettings). App Service Authentication is deliberately off: it would turn away ACS callbacks and Event Grid deliveries, which the app authenticates itself.
  // checkov:skip=CKV_AZURE_63:False positive (appsettings, not web config). HTTP logs: the Functions host sends requests to Application Insights.
  // checkov:skip=CKV_AZURE_65:False positive (appsettings, not web config). Detailed error pages are a Windows IIS feature; errors go to Application Insights.
  // checkov:skip=CKV_AZURE_66:False positive (appsettings, not web config). Failed request tracing is a Windows IIS feature; failures go to Application Insights.
  // checkov:skip=CKV_AZURE_80:False positive: a Python app has no .NET Framework version.
  // checkov:skip=CKV_AZURE_88:False positive: Azure Files mounts are not used; Flex Consumption runs the package from the deployment container.
  // checkov:skip=CKV_AZURE_222:False positive (appsettings). The site must be public; see the skip on the site resource.
  parent: functionApp
  name: 'appsettings'
  properties: union(platformSettings, entraTelemetrySettings, routingSettings, appSettings)
}

output name string = functionApp.name
output id string = functionApp.id
output defaultHostName string = functionApp.properties.defaultHostName
output callbackBaseUrl string = 'https://${functionApp.properties.defaultHostName}/api'
