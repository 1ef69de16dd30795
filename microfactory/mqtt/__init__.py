"""One MQTT client for every program: the gateway's adapter and MES link, the MES, the simulators.

:mod:`.settings` holds the pydantic models (no paho); :mod:`.client` the paho-based client.
"""
