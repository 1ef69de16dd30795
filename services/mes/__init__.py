"""MES-lite: orders, batches, operation runs, parts, genealogy, OEE and energy per part.

Entry points: :func:`services.mes.api.app.create_app`, :class:`services.mes.settings.MesSettings`,
:class:`services.mes.bridge.MqttBridge`, :func:`services.mes.seed.seed_demo`.
"""
