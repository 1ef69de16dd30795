"""MES-lite: orders, batches, operation runs, parts, genealogy, OEE and energy per part.

Entry points: :func:`microfactory.mes.api.app.create_app`, :class:`microfactory.mes.settings.MesSettings`,
:class:`microfactory.mes.bridge.MqttBridge`, :func:`microfactory.mes.seed.seed_demo`.
"""
