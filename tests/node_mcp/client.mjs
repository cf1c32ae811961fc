// A Node MCP client (npm @modelcontextprotocol/sdk, streamable HTTP) for toolcall's tests:
//   node client.mjs URL [TOOL [ARGUMENTS_JSON]]
// connects to URL, lists the tools and, when TOOL is given, calls it with the
// arguments (default {}). Prints one JSON object on stdout:
//   {"server": {...}, "tools": [{name, description, inputSchema}], "call": CallToolResult | null}
// and exits 0; on a failure prints {"error": "..."} and exits 1.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, tool, rawArgs] = process.argv.slice(2);
if (!url) {
  console.error("usage: node client.mjs URL [TOOL [ARGUMENTS_JSON]]");
  process.exit(2);
}

const client = new Client({ name: "toolcall-node-test-client", version: "1.0.0" });
try {
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  const listed = await client.listTools();
  let call = null;
  if (tool) {
    call = await client.callTool({ name: tool, arguments: rawArgs ? JSON.parse(rawArgs) : {} });
  }
  const tools = listed.tools.map((t) => ({
    name: t.name,
    description: t.description,
    inputSchema: t.inputSchema,
  }));
  console.log(JSON.stringify({ server: client.getServerVersion(), tools, call }));
  await client.close();
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ error: String(err && err.message ? err.message : err) }));
  process.exit(1);
}
