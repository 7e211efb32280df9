"""The use cases: each one store transaction plus the effects it records for after
the commit (the outbox), and the device protocol around them: the gateway, command delivery
and deadlines, the telemetry recorder, the event hub, presence. The rules they apply live in
`fleetstate.domain`; the store, the bus and the blob store are reached through their interfaces.
"""
