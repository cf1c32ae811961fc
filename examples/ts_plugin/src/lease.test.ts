// Run by tests/test_ts_plugin.py after tsc: node --test dist/
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registrar } from './lease';

// A registry from before tools_per_role sends an empty map: only the
// distinct-name count can say something is missing.
test('missing falls back to the name count without tools_per_role', () => {
  const registrar = new Registrar({
    registry: 'unix:/nonexistent.sock', // never dialled: the client connects on first call
    token: '',
    source: 'plugin:test',
    callbackAddress: '127.0.0.1:1',
    leaseTtlS: 6,
    tools: {},
    log: () => {},
  });
  registrar.registered = 2;
  registrar.perRole = { default: 2, support: 2 };
  assert.deepEqual(
    [
      registrar.missing({ tools: 2, toolsPerRole: {} }),
      registrar.missing({ tools: 1, toolsPerRole: {} }),
      registrar.missing({ tools: 2, toolsPerRole: { default: 2, support: 1 } }),
      registrar.missing({ tools: 2, toolsPerRole: { default: 2, support: 2 } }),
    ],
    ['', '1 of 2 tools', "1 of 2 in role 'support'", ''],
  );
});
