// A Node MCP server (npm @modelcontextprotocol/sdk, stdio) for toolcall's mount tests:
// an implementation independent of the Python SDK. Tools:
//   node_reverse {text}  -> text content: the text reversed
//   node_sum {a, b}      -> structuredContent {sum}, with the same JSON as text
//   node_fail {reason}   -> isError with the reason as text
// Logs go to stderr: stdout carries only JSON-RPC.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

const server = new McpServer({ name: "toolcall-node-test", version: "1.0.0" });

server.registerTool(
  "node_reverse",
  { description: "Reverse a text", inputSchema: { text: z.string() } },
  async ({ text }) => ({ content: [{ type: "text", text: [...text].reverse().join("") }] }),
);

server.registerTool(
  "node_sum",
  {
    description: "Add two numbers",
    inputSchema: { a: z.number(), b: z.number() },
    outputSchema: { sum: z.number() },
  },
  async ({ a, b }) => {
    const out = { sum: a + b };
    return { content: [{ type: "text", text: JSON.stringify(out) }], structuredContent: out };
  },
);

server.registerTool(
  "node_fail",
  { description: "Fail on purpose", inputSchema: { reason: z.string() } },
  async ({ reason }) => ({ content: [{ type: "text", text: reason }], isError: true }),
);

await server.connect(new StdioServerTransport());
console.error("node MCP server ready on stdio");
