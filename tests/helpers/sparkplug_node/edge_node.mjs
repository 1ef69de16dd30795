// A Sparkplug B edge node we did not write (Eclipse Tahu's sparkplug-client from npm), started
// by the test suite to test our Sparkplug adapter against a real third-party implementation.
//
//   node edge_node.mjs CONFIG_JSON
//
// CONFIG_JSON (see tests/helpers/sparkplug_node.py, which writes it):
//   {"url": "mqtt://127.0.0.1:PORT", "username": null|str, "password": null|str,
//    "group": str, "node": str, "client_id": str,
//    "node_metrics": [metric, ...], "devices": {"<device id>": [metric, ...]}}
// where a metric is sparkplug-payload's object: {"name", "alias", "type", "value",
// "properties": {"engUnit": {"type": "String", "value": "kW"}}}.
//
// Driven over stdin/stdout, one JSON object per line. Every command carries an "id" and is
// answered {"id": ..., "ok": true} (or "error"). Events are printed as {"event": ...}:
// connected, suback (one per subscription: NCMD, DCMD), birth (after NBIRTH+DBIRTHs, with
// "seq"), rebirth (NCMD Node Control/Rebirth
// received), ncmd, close, offline, error.
//
// Commands ({"cmd": ...}):
//   ddata {device, metrics: [{alias?|name?, type, value, timestamp?}]}   DDATA (aliases only
//         if the metrics say so); the values become the device's current ones for births
//   ndata {metrics}           NDATA
//   skip_seq {n=1}            the next message carries seq + n: n messages "lost"
//   ddeath {device}           DDEATH of one device
//   dbirth {device}           DBIRTH of one device again
//   raw_ndeath {bdSeq}        an NDEATH with that bdSeq on the node's connection (a late
//                             death of another session)
//   die                       cut the TCP connection without DISCONNECT (the broker sends the
//                             NDEATH will) and stay down until "revive"
//   revive                    reconnect: the client births again
//   stop                      end the client (no NDEATH) and exit
//   state                     answer with {seq, bdSeq, connected}

import readline from "node:readline";
import * as sparkplug from "sparkplug-client";

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const config = JSON.parse(process.argv[2]);
const devices = config.devices || {};
const nodeMetrics = config.node_metrics || [];

// current values by device (null: the node itself) and metric name, for births
const current = new Map();
const remember = (device, metrics) => {
    const key = device ?? "";
    if (!current.has(key)) current.set(key, new Map());
    for (const m of metrics) {
        const name = m.name ?? findName(device, m.alias);
        if (name !== undefined) current.get(key).set(name, m.value);
    }
};
const findName = (device, alias) => {
    const list = device === null ? nodeMetrics : devices[device] || [];
    return list.find((m) => m.alias === alias)?.name;
};
const withCurrent = (device, metrics) =>
    metrics.map((m) => {
        const values = current.get(device ?? "");
        return values && values.has(m.name) ? { ...m, value: values.get(m.name) } : { ...m };
    });

const client = sparkplug.newClient({
    serverUrl: config.url,
    username: config.username ?? null,
    password: config.password ?? null,
    groupId: config.group,
    edgeNode: config.node,
    clientId: config.client_id,
    version: "spBv1.0",
    keepalive: 5,
    mqttOptions: { reconnectPeriod: 500 },
});
// the MQTT.js client inside sparkplug-client (its seq, bdSeq and socket are plain fields)
const mqttClient = () => client.client;

function births() {
    const now = Date.now();
    client.publishNodeBirth({
        timestamp: now,
        metrics: [
            { name: "Node Control/Rebirth", type: "Boolean", value: false },
            ...withCurrent(null, nodeMetrics),
        ],
    });
    for (const [device, metrics] of Object.entries(devices)) {
        client.publishDeviceBirth(device, { timestamp: now, metrics: withCurrent(device, metrics) });
    }
    out({ event: "birth", seq: client.seq, bdSeq: client.bdSeq });
}

client.on("connect", () => out({ event: "connected" }));
// the client subscribes to NCMD and DCMD on connect without waiting for the SUBACKs: tell the
// test when they are in, since a command published before then is not routed to the node
mqttClient().on("packetreceive", (packet) => {
    if (packet.cmd === "suback") out({ event: "suback" });
});
client.on("birth", births);
client.on("close", () => out({ event: "close" }));
client.on("offline", () => out({ event: "offline" }));
client.on("error", (err) => out({ event: "error", message: String(err) }));
client.on("ncmd", (payload) => {
    const rebirth = (payload.metrics || []).find((m) => m.name === "Node Control/Rebirth");
    out({ event: "ncmd", metrics: (payload.metrics || []).map((m) => m.name) });
    if (rebirth && rebirth.value === true) {
        out({ event: "rebirth" });
        births();
    }
});

function handle(cmd) {
    switch (cmd.cmd) {
        case "ddata": {
            remember(cmd.device, cmd.metrics);
            client.publishDeviceData(cmd.device, { timestamp: Date.now(), metrics: cmd.metrics });
            return { seq: client.seq };
        }
        case "ndata": {
            remember(null, cmd.metrics);
            client.publishNodeData({ timestamp: Date.now(), metrics: cmd.metrics });
            return { seq: client.seq };
        }
        case "skip_seq": {
            client.seq = (client.seq + (cmd.n ?? 1)) % 256;
            return { seq: client.seq };
        }
        case "ddeath": {
            client.publishDeviceDeath(cmd.device, { timestamp: Date.now(), metrics: [] });
            return { seq: client.seq };
        }
        case "dbirth": {
            const metrics = withCurrent(cmd.device, devices[cmd.device] || []);
            client.publishDeviceBirth(cmd.device, { timestamp: Date.now(), metrics });
            return { seq: client.seq };
        }
        case "raw_ndeath": {
            const topic = `spBv1.0/${config.group}/NDEATH/${config.node}`;
            const payload = client.encodePayload({
                timestamp: Date.now(),
                metrics: [{ name: "bdSeq", type: "UInt64", value: cmd.bdSeq }],
            });
            mqttClient().publish(topic, Buffer.from(payload));
            return {};
        }
        case "die": {
            const mqtt = mqttClient();
            mqtt.options.reconnectPeriod = 0; // stay down: no automatic reconnect
            mqtt.stream.destroy(); // no DISCONNECT: the broker publishes the will (NDEATH)
            return {};
        }
        case "revive": {
            const mqtt = mqttClient();
            mqtt.options.reconnectPeriod = 500;
            mqtt.reconnect();
            return {};
        }
        case "state":
            return { seq: client.seq, bdSeq: client.bdSeq, connected: mqttClient().connected };
        case "stop": {
            client.stop();
            setTimeout(() => process.exit(0), 100);
            return {};
        }
        default:
            throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
    }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
        cmd = JSON.parse(line);
    } catch (err) {
        out({ error: `not JSON: ${line}` });
        return;
    }
    try {
        out({ id: cmd.id, ok: true, ...handle(cmd) });
    } catch (err) {
        out({ id: cmd.id, ok: false, error: String(err && err.stack ? err.stack : err) });
    }
});
lines.on("close", () => process.exit(0)); // the test went away: so do we
