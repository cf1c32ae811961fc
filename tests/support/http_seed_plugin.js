// An HTTP tool plugin in Node written from the HTTP registry contract alone:
// the plain `http` module, no dependencies. Registers get_weather through
// POST /api/tools/register on the main server (argv[2]), retrying until ok,
// serves its callback_url, answers {"output": ..., "is_error": ...}.
// Prints "READY <port>" once registered; unregisters on SIGTERM.
"use strict";
const http = require("http");

const MAIN_SERVER = process.argv[2];
const SOURCE = process.argv[3] || "node_plugin";

function post(path, payload) {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(payload));
    const req = http.request(MAIN_SERVER + path, {
      method: "POST",
      headers: { "content-type": "application/json", "content-length": data.length },
      timeout: 5000,
    }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        try { resolve(JSON.parse(Buffer.concat(chunks).toString())); } catch (e) { reject(e); }
      });
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end(data);
  });
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = JSON.parse(Buffer.concat(chunks).toString());
    const city = body.arguments.city;
    const reply = city === "Atlantis"
      ? { output: null, is_error: true, error: "city not found" }
      : { output: { city, temp_c: 19, weather: "cloudy", from: "node", call_id: body.call_id },
          is_error: false };
    const data = Buffer.from(JSON.stringify(reply));
    res.writeHead(200, { "content-type": "application/json", "content-length": data.length });
    res.end(data);
  });
});

async function registerWithRetry(port) {
  const payload = {
    name: "node_weather",
    description: "Look up the weather in a given city (from Node)",
    parameters: {
      type: "object",
      properties: { city: { type: "string", description: "City name" } },
      required: ["city"],
    },
    callback_url: `http://127.0.0.1:${port}/tool_invoke`,
    role: null,
    source: SOURCE,
    timeout_seconds: 30,
  };
  for (;;) {
    try {
      if ((await post("/api/tools/register", payload)).ok) return;
    } catch (e) { /* main_server isn't up yet, try again later */ }
    await new Promise((r) => setTimeout(r, 200));
  }
}

server.listen(0, "127.0.0.1", async () => {
  const port = server.address().port;
  await registerWithRetry(port);
  console.log(`READY ${port}`);
});

process.on("SIGTERM", async () => {
  try { await post("/api/tools/unregister", { name: "node_weather", role: null }); } catch (e) {}
  process.exit(0);
});
