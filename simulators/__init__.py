"""Virtual workshop machines that speak real OPC UA and MQTT, with an exact ground truth."""
