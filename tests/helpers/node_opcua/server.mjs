// An OPC UA server we did not write (node-opcua from npm), started by the test suite to test
// our OPC UA client adapter against a real third-party implementation.
//
//   node server.mjs CONFIG.json
//
// Prints exactly one JSON line on stdout once listening:
//   {"ready": true, "endpoint": "opc.tcp://127.0.0.1:PORT", "certificate": "<server cert DER>"}
// Everything else (node-opcua's own warnings included) goes to stderr. Exits on SIGTERM.
//
// CONFIG.json (see tests/helpers/node_opcua.py, which writes it):
//   port, host, pki_dir, security: [[policy, mode], ...], allow_anonymous, users: {name: pw},
//   trusted_client_certificates: [path, ...] (DER or PEM), update_ms, companion (bool).

import fs from "node:fs";
import path from "node:path";

// node-opcua writes its warnings with console.log: keep stdout for the ready line alone.
const toStderr = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
console.log = toStderr;
console.info = toStderr;
console.warn = toStderr;
console.debug = toStderr;

const NAMESPACE_URI = "urn:microfactory:test:node-opcua";
const MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/";
const MACHINE_TOOL_URI = "http://opcfoundation.org/UA/MachineTool/";

const POLICIES = ["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"];
const MODES = ["None", "Sign", "SignAndEncrypt"];

function fail(message) {
    process.stderr.write(`node-opcua test server: ${message}\n`);
    process.exit(2);
}

function readConfig(file) {
    let config;
    try {
        config = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (err) {
        fail(`cannot read config ${file}: ${err.message}`);
    }
    const required = ["port", "pki_dir", "security"];
    for (const key of required) {
        if (config[key] === undefined) fail(`config ${file}: missing field ${key}`);
    }
    const pairs = config.security.map(([policy, mode], i) => {
        if (!POLICIES.includes(policy)) {
            fail(`config ${file}: security[${i}] policy ${policy}; expected one of ${POLICIES}`);
        }
        if (!MODES.includes(mode)) {
            fail(`config ${file}: security[${i}] mode ${mode}; expected one of ${MODES}`);
        }
        if ((policy === "None") !== (mode === "None")) {
            fail(`config ${file}: security[${i}] [${policy}, ${mode}]: None goes only with None`);
        }
        return [policy, mode];
    });
    if (pairs.length === 0) fail(`config ${file}: security is empty; give at least one [policy, mode]`);
    return {
        host: "127.0.0.1",
        allow_anonymous: true,
        users: {},
        trusted_client_certificates: [],
        update_ms: 500,
        companion: false,
        ...config,
        pairs,
    };
}

/** DER bytes of a certificate file, DER or PEM. */
function readDer(file) {
    const raw = fs.readFileSync(file);
    const text = raw.toString("latin1");
    const m = text.match(/-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/);
    return m ? Buffer.from(m[1].replace(/\s+/g, ""), "base64") : raw;
}

/** Node ids and values the tests rely on: named after the machine's own tags. */
function buildMachine(addressSpace, updaters) {
    const ns = addressSpace.registerNamespace(NAMESPACE_URI);
    const machine = ns.addObject({
        organizedBy: addressSpace.rootFolder.objects,
        browseName: "Machine",
        nodeId: "s=Machine",
    });
    const started = new Date();
    let tick = 0;

    const power = ns.addAnalogDataItem({
        componentOf: machine,
        browseName: "Power",
        nodeId: "s=Machine.Power",
        dataType: "Double",
        engineeringUnitsRange: { low: 0, high: 50 },
        engineeringUnits: standardUnits.kilowatt,
    });
    const temperature = ns.addAnalogDataItem({
        componentOf: machine,
        browseName: "Temperature",
        nodeId: "s=Machine.Temperature",
        dataType: "Double",
        engineeringUnitsRange: { low: -20, high: 200 },
        engineeringUnits: standardUnits.degree_celsius,
    });
    const variable = (browseName, dataType, extra = {}) =>
        ns.addVariable({
            componentOf: machine,
            browseName,
            nodeId: `s=Machine.${browseName}`,
            dataType,
            minimumSamplingInterval: 100,
            ...extra,
        });
    const partCount = variable("PartCount", "UInt32");
    const running = variable("Running", "Boolean");
    const startTime = variable("StartTime", "DateTime");
    const phases = variable("Phases", "Double", { valueRank: 1, arrayDimensions: [3] });
    const stateCode = variable("StateCode", "Int16");
    const stateEnumType = ns.addEnumerationType({
        browseName: "MachineStateEnumeration",
        nodeId: "s=MachineStateEnumeration",
        enumeration: ["Off", "Idle", "Running", "Fault"],
    });
    const stateValuesType = ns.addEnumerationType({
        browseName: "MachineStateValuesEnumeration",
        nodeId: "s=MachineStateValuesEnumeration",
        enumeration: [
            { value: 0, displayName: "Off" },
            { value: 10, displayName: "Idle" },
            { value: 20, displayName: "Running" },
            { value: 30, displayName: "Fault" },
        ],
    });
    const stateEnum = variable("StateEnum", stateEnumType);
    const stateEnumValues = variable("StateEnumValues", stateValuesType);
    const badNode = variable("BadNode", "Double");
    const uncertainNode = variable("UncertainNode", "Double");
    const frozenTs = variable("FrozenTs", "Double");
    const goodThenBad = variable("GoodThenBad", "Double");

    const frozenAt = new Date(Date.UTC(2026, 0, 1, 0, 0, 0));
    const good = StatusCodes.Good;
    const double = (value) => new Variant({ dataType: DataType.Double, value });
    const nullValue = new Variant({ dataType: DataType.Null });
    startTime.setValueFromSource(new Variant({ dataType: DataType.DateTime, value: started }), good);

    const update = () => {
        tick += 1;
        const t = tick;
        power.setValueFromSource(double(10 + 5 * Math.sin(t / 5) + (t % 7) / 10), good);
        temperature.setValueFromSource(double(40 + 0.1 * (t % 50)), good);
        partCount.setValueFromSource(new Variant({ dataType: DataType.UInt32, value: t }), good);
        running.setValueFromSource(new Variant({ dataType: DataType.Boolean, value: t % 2 === 0 }), good);
        phases.setValueFromSource(
            new Variant({
                dataType: DataType.Double,
                arrayType: VariantArrayType.Array,
                value: new Float64Array([230 + (t % 3), 231 + (t % 5) / 10, 229.5 + (t % 4) / 10]),
            }),
            good,
        );
        const state = t % 4;
        stateCode.setValueFromSource(new Variant({ dataType: DataType.Int16, value: state }), good);
        stateEnum.setValueFromSource(new Variant({ dataType: DataType.Int32, value: state }), good);
        stateEnumValues.setValueFromSource(new Variant({ dataType: DataType.Int32, value: state * 10 }), good);
        badNode.setValueFromSource(nullValue, StatusCodes.BadSensorFailure);
        uncertainNode.setValueFromSource(double(t / 2), StatusCodes.UncertainLastUsableValue);
        frozenTs.setValueFromSource(double(100 + t), good, frozenAt);
        // three Good updates, then three BadCommunicationError ones
        if (Math.floor((t - 1) / 3) % 2 === 0) {
            goodThenBad.setValueFromSource(double(t), good);
        } else {
            goodThenBad.setValueFromSource(nullValue, StatusCodes.BadCommunicationError);
        }
    };
    update();
    updaters.push(update);
    return ns;
}

/** OPC 40001-1 Machinery + OPC 40501-1 MachineTool objects, with counters that move. */
function buildCompanion(addressSpace, ns, updaters) {
    const nsMachinery = addressSpace.getNamespaceIndex(MACHINERY_URI);
    const nsMachineTool = addressSpace.getNamespaceIndex(MACHINE_TOOL_URI);
    if (nsMachinery < 0 || nsMachineTool < 0) fail("companion nodesets did not load");
    const machines = addressSpace.findNode(`ns=${nsMachinery};i=1001`); // Objects/Machines
    const machineToolType = addressSpace.findObjectType("MachineToolType", nsMachineTool);
    const jobType = addressSpace.findObjectType("ProductionJobType", nsMachineTool);
    if (!machines || !machineToolType || !jobType) fail("companion types not found in nodesets");

    const mill = machineToolType.instantiate({
        browseName: { name: "Mill", namespaceIndex: ns.index },
        namespace: ns,
        nodeId: "s=Mill",
        organizedBy: machines,
        optionals: [
            "MachineryBuildingBlocks",
            "MachineryBuildingBlocks.MachineryItemState",
            "Production.ProductionPlan",
        ],
    });
    const child = (node, ...names) => {
        let current = node;
        for (const name of names) {
            current = current.getChildByName(name);
            if (!current) fail(`companion: ${names.join("/")} was not instantiated`);
        }
        return current;
    };
    const itemState = promoteToStateMachine(child(mill, "MachineryBuildingBlocks", "MachineryItemState"));
    const plan = child(mill, "Production", "ProductionPlan");
    const job = jobType.instantiate({
        browseName: { name: "Job1", namespaceIndex: ns.index },
        namespace: ns,
        nodeId: "s=Mill-Production-ProductionPlan-Job1",
        componentOf: plan,
        optionals: ["PartsGood", "PartsCompleted"],
    });
    child(job, "Identifier").setValueFromSource({ dataType: DataType.String, value: "JOB-0001" });
    child(job, "RunsPlanned").setValueFromSource({ dataType: DataType.UInt32, value: 1000 });
    child(job, "RunsPlanned", "IsValid").setValueFromSource({ dataType: DataType.Boolean, value: true });
    promoteToStateMachine(child(job, "State")).setState("Running");
    promoteToStateMachine(child(mill, "Production", "ActiveProgram", "State")).setState("Running");
    const text = (value) => ({ dataType: DataType.LocalizedText, value: { text: value } });
    child(mill, "Identification", "Manufacturer").setValueFromSource(text("microfactory test bench"));
    child(mill, "Identification", "SerialNumber").setValueFromSource({ dataType: DataType.String, value: "MILL-0001" });
    const activeName = child(mill, "Production", "ActiveProgram", "Name");
    activeName.setValueFromSource({ dataType: DataType.String, value: "BRACKET-42.nc" });
    const runsCompleted = child(job, "RunsCompleted");
    const partsGood = child(job, "PartsGood");
    const partsCompleted = child(job, "PartsCompleted");
    let tick = 0;
    const update = () => {
        tick += 1;
        itemState.setState(tick % 2 === 0 ? "NotExecuting" : "Executing");
        const uint = (value) => ({ dataType: DataType.UInt32, value });
        runsCompleted.setValueFromSource(uint(tick));
        partsCompleted.setValueFromSource(uint(tick));
        partsGood.setValueFromSource(uint(tick - Math.floor(tick / 5)));
    };
    update();
    updaters.push(update);
}

const configFile = process.argv[2];
if (!configFile) fail("usage: node server.mjs CONFIG.json");
const config = readConfig(configFile);
const pki = path.resolve(config.pki_dir);

// imported once the config is known to be good: loading node-opcua takes about a second
const { default: opcua } = await import("node-opcua");
const {
    OPCUAServer,
    OPCUACertificateManager,
    MessageSecurityMode,
    SecurityPolicy,
    DataType,
    Variant,
    VariantArrayType,
    StatusCodes,
    standardUnits,
    nodesets,
    promoteToStateMachine,
} = opcua;

const pairs = config.pairs.map(([policy, mode]) => [SecurityPolicy[policy], MessageSecurityMode[mode]]);

const serverCertificateManager = new OPCUACertificateManager({
    rootFolder: path.join(pki, "server"),
    automaticallyAcceptUnknownCertificate: false,
});
const userCertificateManager = new OPCUACertificateManager({
    rootFolder: path.join(pki, "user"),
    automaticallyAcceptUnknownCertificate: false,
});
await serverCertificateManager.initialize();
await userCertificateManager.initialize();
for (const file of config.trusted_client_certificates) {
    await serverCertificateManager.trustCertificate(readDer(file));
}

const nodesetFiles = [nodesets.standard];
if (config.companion) {
    nodesetFiles.push(
        nodesets.di,
        nodesets.ia,
        nodesets.machinery,
        nodesets.isa95JobControl,
        nodesets.machineryJobs,
        nodesets.machineTool,
    );
}

const server = new OPCUAServer({
    port: config.port,
    host: config.host,
    hostname: config.host,
    nodeset_filename: nodesetFiles,
    serverCertificateManager,
    userCertificateManager,
    securityPolicies: [...new Set(pairs.map(([policy]) => policy))],
    securityModes: [...new Set(pairs.map(([, mode]) => mode))],
    allowAnonymous: config.allow_anonymous,
    userManager: {
        isValidUser: (userName, password) =>
            Object.hasOwn(config.users, userName) && config.users[userName] === password,
    },
    serverInfo: {
        applicationUri: "urn:microfactory:test:node-opcua-server",
        productUri: "urn:microfactory:test:node-opcua-server",
        applicationName: { text: "microfactory node-opcua test server" },
    },
});

await server.initialize();
// node-opcua offers every policy x mode of the lists; keep only the pairs asked for (its
// "restricted" None endpoint, which serves discovery only, stays).
for (const endpoint of server.endpoints) {
    const wanted = (d) =>
        d.restricted ||
        pairs.some(([policy, mode]) => d.securityPolicyUri === policy && d.securityMode === mode);
    endpoint._endpoints = endpoint._endpoints.filter(wanted);
}

const updaters = [];
const addressSpace = server.engine.addressSpace;
const ns = buildMachine(addressSpace, updaters);
if (config.companion) buildCompanion(addressSpace, ns, updaters);
const timer = setInterval(() => updaters.forEach((u) => u()), config.update_ms);

await server.start();

const certificatePath = path.join(pki, "server_certificate.der");
fs.writeFileSync(certificatePath, server.getCertificate());

let stopping = false;
const stop = async () => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    setTimeout(() => process.exit(0), 1500).unref();
    try {
        await server.shutdown(0);
    } finally {
        process.exit(0);
    }
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

process.stdout.write(
    JSON.stringify({ ready: true, endpoint: `opc.tcp://${config.host}:${config.port}`, certificate: certificatePath }) +
        "\n",
);
