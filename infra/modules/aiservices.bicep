// Azure AI services (kind AIServices) that ACS uses for text-to-speech and speech
// recognition in calls (the COGNITIVE_SERVICES_ENDPOINT setting). ACS authenticates with its
// system-assigned identity (Cognitive Services User, granted in roles.bicep), so local (key)
// authentication is disabled.

@description('Name of the account; also its custom subdomain (the endpoint host).')
param name string

@description('Azure region. Use one where ACS supports Azure AI services integration.')
param location string

@description('Tags for the resource.')
param tags object

@description('Pricing tier.')
@allowed([
  'S0'
])
param skuName string = 'S0'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_134:ACS reaches the account from Microsoft's network over its public endpoint; this deployment has no virtual network. Local (key) authentication is disabled, and only the ACS identity holds a role on it.
  name: name
  location: location
  tags: tags
  kind: 'AIServices'
  sku: {
    name: skuName
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

output name string = account.name
output id string = account.id
output endpoint string = account.properties.endpoint
