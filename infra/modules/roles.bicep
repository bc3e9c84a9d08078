// Every role assignment of the deployment, one per data-plane access:
//   the app's identity   -> storage (host + app data), the callback secret, ACS, telemetry
//   the ACS identity     -> Azure AI services (TTS and speech recognition in calls)
//   the Event Grid topic -> the dead-letter container
// Built-in role definition ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles

@description('Principal id of the Function App\'s user-assigned identity.')
param appPrincipalId string

@description('Principal id of the ACS resource\'s system-assigned identity.')
param acsPrincipalId string

@description('Principal id of the Event Grid system topic\'s system-assigned identity.')
param systemTopicPrincipalId string

param storageAccountName string
param deadLetterContainerName string
param recordingsContainerName string

@description('copy or byos (bring your own storage: ACS writes recordings into the QA container).')
@allowed([
  'copy'
  'byos'
])
param recordingStorage string = 'copy'
param keyVaultName string
param callbackSecretName string
param acsName string
param aiServicesName string
param appInsightsName string

@description('Grant Monitoring Metrics Publisher for Entra-authenticated telemetry (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).')
param appInsightsEntraAuth bool = false

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  contributor: 'b24988ac-6180-42a0-ab88-20f7382dd24c'
  cognitiveServicesUser: 'a97b65f3-24c7-4388-baec-2e87135dc908'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource recordingsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: recordingsContainerName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource callbackSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: callbackSecretName
}

resource acs 'Microsoft.Communication/communicationServices@2025-05-01' existing = {
  name: acsName
}

resource aiServices 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: aiServicesName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Functions host: AzureWebJobsStorage (identity-based) and the Flex Consumption deployment
// container. Blob Data Owner is what the host needs for its leases and keys.
resource appHostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The app: QA copies of recordings (APP_STORAGE__blobServiceUri).
resource appBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The app: call state and processed-event tables (APP_STORAGE__tableServiceUri).
resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The app: the CALLBACK_SECRET Key Vault reference, scoped to that one secret.
resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(callbackSecret.id, appPrincipalId, roles.keyVaultSecretsUser)
  scope: callbackSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The app: Call Automation with Microsoft Entra ID (ACS_ENDPOINT, no access key). ACS has no
// narrower built-in data-plane role for Call Automation; Contributor is scoped to this resource.
resource appAcsContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acs.id, appPrincipalId, roles.contributor)
  scope: acs
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.contributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ACS itself: text-to-speech and speech recognition through Azure AI services.
resource acsCognitiveServicesUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(aiServices.id, acsPrincipalId, roles.cognitiveServicesUser)
  scope: aiServices
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesUser)
    principalId: acsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Bring your own storage (RECORDING_STORAGE=byos): ACS writes recordings into the QA container with its identity.
resource acsRecordingWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (recordingStorage == 'byos') {
  name: guid(recordingsContainer.id, acsPrincipalId, roles.storageBlobDataContributor)
  scope: recordingsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: acsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Event Grid: dead-lettering with the system topic's identity (the account has no shared keys).
resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, systemTopicPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: systemTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Optional: the Functions host sends telemetry with Microsoft Entra ID.
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (appInsightsEntraAuth) {
  name: guid(appInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}
