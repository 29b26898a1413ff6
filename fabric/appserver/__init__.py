"""How app servers reach the fabric: the service API (``HubHandle``), REST, OData filters,
webhooks (upstream event handlers). Imports ``fabric.core``, never another edge."""
