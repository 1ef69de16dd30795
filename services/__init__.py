"""Services that run beside the gateway; today the MES-lite in :mod:`services.mes`."""
