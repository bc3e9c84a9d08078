// The Functions host's own storage account: the Flex Consumption deployment package (the
// `app-package` container) and AzureWebJobsStorage (identity-based: the host's keys and leases in
// containers it creates itself). Only the host identity has a data role on it (roles.bicep).
//
// No app data lives here. The app's tables and QA recordings are in the app-data account
// (storage.bicep), which the app identity reaches with roles scoped to those containers and
// tables only: nothing the app writes from an event can reach the package.
// Shared keys are disabled: every client authenticates with Microsoft Entra ID.

@description('Storage account name: 3-24 lowercase letters and digits.')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object

@description('Redundancy of the account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param redundancy string = 'Standard_GRS'

@description('Container the Flex Consumption plan deploys the app package from.')
param deploymentContainerName string

@description('Days a deleted blob or container can be restored (a replaced package can be recovered).')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 7

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:No virtual network in this deployment: the Flex Consumption platform fetches the package and the host reaches AzureWebJobsStorage over the public endpoint. Access is Entra ID only (allowSharedKeyAccess false), HTTPS and TLS 1.2+, and only the host identity has a data role here.
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: public network access is needed without a virtual network; shared keys are disabled, so only the host identity (Storage Blob Data Owner) gets in.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: redundancy
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output name string = hostStorage.name
output id string = hostStorage.id
output blobEndpoint string = hostStorage.properties.primaryEndpoints.blob
output deploymentContainerName string = deploymentContainer.name
