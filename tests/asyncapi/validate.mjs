// Parse and validate an AsyncAPI document with the reference parser (@asyncapi/parser, the one
// the AsyncAPI CLI and Studio use), then check every message example against the message's payload
// and headers schemas as the parser resolved them (the parser does not check examples itself).
// Prints {"valid": bool, "diagnostics": [...], "examples": N} as JSON on stdout; exits 1 when any
// diagnostic has error severity, an example does not match, or no document came out.
// Usage: node validate.mjs PATH  (tests/unit/test_asyncapi.py runs it)
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const path = resolve(process.argv[2]);
const { document, diagnostics } = await new Parser().parse(readFileSync(path, 'utf8'), { source: path });
const names = { [DiagnosticSeverity.Error]: 'error', [DiagnosticSeverity.Warning]: 'warning',
                [DiagnosticSeverity.Information]: 'information', [DiagnosticSeverity.Hint]: 'hint' };
const report = diagnostics.map((d) => ({
  severity: names[d.severity] ?? String(d.severity), code: d.code, message: d.message, path: d.path.join('/'),
}));

let examples = 0;
if (document !== undefined) {
  // AsyncAPI Schema is JSON Schema draft 7 plus keywords such as `discriminator` (ignored here).
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  for (const message of document.allMessages()) {
    const schemas = { payload: message.payload()?.json(), headers: message.headers()?.json() };
    for (const example of message.examples()) {
      const data = { payload: example.payload(), headers: example.headers() };
      for (const part of ['payload', 'headers']) {
        if (data[part] === undefined) continue;
        if (schemas[part] === undefined) {
          report.push({ severity: 'error', code: 'example-without-schema', message: `example has ${part} but the message has no ${part} schema`, path: `${message.id()}/${example.name()}` });
          continue;
        }
        examples += 1;
        const check = ajv.compile(schemas[part]);
        if (!check(data[part])) {
          for (const e of check.errors) {
            report.push({ severity: 'error', code: 'example-does-not-match-schema',
                          message: `${part}${e.instancePath} ${e.message}`, path: `${message.id()}/${example.name()}` });
          }
        }
      }
    }
  }
}
const valid = document !== undefined && !report.some((d) => d.severity === 'error');
process.stdout.write(JSON.stringify({ valid, version: document?.version(), examples, diagnostics: report }) + '\n');
process.exit(valid ? 0 : 1);
