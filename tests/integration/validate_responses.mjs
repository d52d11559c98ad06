// validate_responses.mjs SPEC LOG: checks every HTTP exchange the integration tests recorded
// (JSON Lines from the harness, THAWD_RESPONSE_LOG) against api-spec/openapi.yaml with a real
// JSON Schema validator (Ajv, draft 2020-12 as OpenAPI 3.1 uses). For each exchange: the path
// matches a path template, the method is an operation of it, the status is documented, the
// media type is documented for that status, and a JSON body (or each SSE event's data)
// validates against the documented schema. Prints TAP: one line per distinct
// (method, template, status, media type), failing with the first errors found.
import fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(process.env.VALIDATOR_MODULES + '/');
const Ajv2020 = require('ajv/dist/2020').default;
const addFormats = require('ajv-formats');
const YAML = require('yaml');

const [specPath, logPath] = process.argv.slice(2);
const doc = YAML.parse(fs.readFileSync(specPath, 'utf8'));
const lines = fs.readFileSync(logPath, 'utf8').split('\n').filter((l) => l.trim());

const ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
addFormats(ajv);
ajv.addSchema(doc, 'spec.json');

const ptr = (parts) => parts.map((p) => String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
const resolve = (obj) => {
  let o = obj;
  for (let i = 0; o && o.$ref && i < 10; i++) {
    const parts = o.$ref.replace(/^#\//, '').split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    o = parts.reduce((a, k) => (a ? a[k] : undefined), doc);
  }
  return o;
};

const templates = Object.keys(doc.paths || {}).map((t) => ({
  t,
  re: new RegExp('^' + t.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{[^}]+\\?\}/g, '[^/]+') + '$'),
  params: (t.match(/\{/g) || []).length,
})).sort((a, b) => a.params - b.params);

const validators = new Map();
const validatorFor = (parts) => {
  const key = ptr(parts);
  if (!validators.has(key)) validators.set(key, ajv.compile({ $ref: 'spec.json#/' + key }));
  return validators.get(key);
};

const groups = new Map();
const note = (key, err) => {
  if (!groups.has(key)) groups.set(key, { n: 0, errors: [] });
  const g = groups.get(key);
  g.n++;
  if (err && g.errors.length < 3) g.errors.push(err);
};

for (const line of lines) {
  let r;
  try {
    r = JSON.parse(line);
  } catch (e) {
    note('unparsable log line', String(e));
    continue;
  }
  const method = r.method.toLowerCase();
  if (method === 'options') continue; // CORS preflight: generic, answered for every path
  const tpl = templates.find((x) => x.re.test(r.path));
  const media = (r.content_type || '').split(';')[0].trim().toLowerCase();
  const key = `${r.method} ${tpl ? tpl.t : r.path} ${r.status} ${media || '-'}`;
  if (!tpl) {
    // 404 for unknown paths is part of the contract; anything else must be described
    if (r.status === 404 && media === 'application/problem+json') {
      note(key, validateBody(['components', 'schemas', 'Problem'], r));
    } else note(key, `path ${r.path} matches no path of the spec`);
    continue;
  }
  const opMethod = method === 'head' ? 'get' : method;
  const op = doc.paths[tpl.t][opMethod];
  if (!op) {
    if (r.status === 405) note(key, null);
    else note(key, `${r.method} is not an operation of ${tpl.t}`);
    continue;
  }
  const codes = op.responses || {};
  const code = String(r.status) in codes ? String(r.status)
    : `${String(r.status)[0]}XX` in codes ? `${String(r.status)[0]}XX`
    : 'default' in codes ? 'default' : null;
  if (!code) {
    note(key, `status ${r.status} is not documented for ${r.method} ${tpl.t}`);
    continue;
  }
  const resp = resolve(codes[code]);
  if (method === 'head' || r.status === 304 || r.status === 204 || !r.body && !media) {
    note(key, null);
    continue;
  }
  const content = resp.content || {};
  if (!(media in content)) {
    note(key, `media type ${media} is not documented for ${r.method} ${tpl.t} ${code}`);
    continue;
  }
  // JSON pointer to the schema, through a components/responses $ref when there is one
  let base = ['paths', tpl.t, opMethod, 'responses', code];
  if (codes[code].$ref) base = codes[code].$ref.replace(/^#\//, '').split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const schemaPath = [...base, 'content', media, 'schema'];
  if (media === 'text/event-stream') {
    note(key, validateSse(r));
  } else if (media.endsWith('json')) {
    note(key, content[media].schema ? validateBody(schemaPath, r) : null);
  } else {
    note(key, r.body === null || typeof r.body === 'string' ? null : 'body is not text');
  }
}

function validateBody(schemaPath, r) {
  let body;
  try {
    body = JSON.parse(r.body);
  } catch (e) {
    return `${r.method} ${r.path}: body is not JSON: ${e}`;
  }
  const v = validatorFor(schemaPath);
  if (v(body)) return null;
  return `${r.method} ${r.path} ${r.status}: ` + ajv.errorsText(v.errors.slice(0, 4), { dataVar: 'body' }) +
    ` -- body: ${r.body.slice(0, 300)}`;
}

function validateSse(r) {
  const v = validatorFor(['components', 'schemas', 'Event']);
  for (const rec of (r.body || '').split('\n\n')) {
    const data = rec.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart());
    if (!data.length) continue;
    let ev;
    try {
      ev = JSON.parse(data.join('\n'));
    } catch (e) {
      return `${r.path}: SSE data is not JSON: ${data.join('\n').slice(0, 200)}`;
    }
    if (!v(ev)) return `${r.path}: SSE event: ` + ajv.errorsText(v.errors.slice(0, 4), { dataVar: 'event' });
  }
  return null;
}

let n = 0;
let failed = 0;
for (const [key, g] of [...groups.entries()].sort()) {
  n++;
  if (g.errors.length) {
    failed++;
    console.log(`not ok ${n} - ${key} (${g.n} responses)`);
    for (const e of g.errors) console.log('# ' + e.replace(/\n/g, '\n# '));
  } else {
    console.log(`ok ${n} - ${key} (${g.n} responses)`);
  }
}
console.log(`# ${lines.length} recorded responses, ${groups.size} kinds, ${failed} failing`);
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
