// test/mongo/server.js
//   A small in-memory MongoDB wire-protocol server for the ledger sink tests.
//
// Speaks just enough of the protocol for libmongoc 1.23 (Debian 12) and the
// sink: the OP_QUERY handshake (hello/isMaster on admin.$cmd, answered with
// OP_REPLY) and OP_MSG for everything else.  Commands: hello, isMaster,
// ping, buildInfo, getLastError-free writes (insert, delete), find,
// createIndexes, listIndexes, drop, endSessions, killCursors.
// Unique indexes (with sparse and partialFilterExpression) are enforced on
// insert with the 11000 duplicate-key write error; ordered inserts stop at
// the first error, unordered ones report one writeError per document.
//
// Usage: node server.js [port]  (or PORT=...; 0 picks a free port).
// Prints "listening <port>" when ready; exits on SIGTERM/SIGINT.
'use strict';

const net = require('net');
const { BSON, ObjectId, Long, Int32, Double } = require('bson');

const OP_REPLY = 1;
const OP_QUERY = 2004;
const OP_MSG = 2013;
const MAX_WIRE_VERSION = 17; // MongoDB 6.0

const DESER = { promoteValues: false, promoteBuffers: false };

// db name -> Map(collection name -> { docs: [], indexes: [] })
const databases = new Map();
let nextRequestId = 1;
let nextConnectionId = 1;

function getColl(db, name, create) {
  let d = databases.get(db);
  if (!d) {
    if (!create) return null;
    d = new Map();
    databases.set(db, d);
  }
  let c = d.get(name);
  if (!c && create) {
    c = { docs: [], indexes: [{ v: 2, key: { _id: 1 }, name: '_id_' }] };
    d.set(name, c);
  }
  return c || null;
}

// ---------------------------------------------------------------- values

function num(v) {
  if (v === null || v === undefined) return v;
  if (typeof v === 'number') return v;
  if (v._bsontype === 'Int32' || v._bsontype === 'Double') return v.value;
  if (v._bsontype === 'Long') return v.toNumber();
  return v;
}

function isNumeric(v) {
  return typeof v === 'number' || (v && (v._bsontype === 'Int32' ||
    v._bsontype === 'Double' || v._bsontype === 'Long'));
}

// BSON comparison order (subset).
function typeRank(v) {
  if (v === undefined || v === null) return 1;
  if (isNumeric(v)) return 2;
  if (typeof v === 'string') return 3;
  if (Array.isArray(v)) return 5;
  if (v._bsontype === 'ObjectId') return 7;
  if (typeof v === 'boolean') return 8;
  if (v instanceof Date) return 9;
  if (typeof v === 'object') return 4;
  return 10;
}

function compare(a, b) {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra < rb ? -1 : 1;
  switch (ra) {
    case 1: return 0;
    case 2: {
      const x = num(a);
      const y = num(b);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    case 3: return a < b ? -1 : a > b ? 1 : 0;
    case 7: return Buffer.compare(Buffer.from(a.id), Buffer.from(b.id));
    case 8: return a === b ? 0 : a ? 1 : -1;
    case 9: return Math.sign(a.getTime() - b.getTime());
    case 5: {
      for (let i = 0; i < Math.min(a.length, b.length); i++) {
        const c = compare(a[i], b[i]);
        if (c) return c;
      }
      return Math.sign(a.length - b.length);
    }
    default: {
      const x = JSON.stringify(a);
      const y = JSON.stringify(b);
      return x < y ? -1 : x > y ? 1 : 0;
    }
  }
}

function getPath(doc, path) {
  let cur = doc;
  for (const part of path.split('.')) {
    if (cur === null || cur === undefined || typeof cur !== 'object') return undefined;
    cur = cur[part];
  }
  return cur;
}

function isOperatorDoc(v) {
  return v && typeof v === 'object' && !Array.isArray(v) && !v._bsontype &&
    !(v instanceof Date) && Object.keys(v).length > 0 &&
    Object.keys(v).every((k) => k.startsWith('$'));
}

// Equality with array-field semantics (a value matches an array containing it).
function valueEquals(field, want) {
  if (Array.isArray(field) && !Array.isArray(want)) {
    return field.some((x) => compare(x, want) === 0);
  }
  return compare(field === undefined ? null : field, want) === 0;
}

function matchOps(field, ops) {
  for (const [op, arg] of Object.entries(ops)) {
    const sameType = field !== undefined && typeRank(field) === typeRank(arg);
    switch (op) {
      case '$eq': if (!valueEquals(field, arg)) return false; break;
      case '$ne': if (valueEquals(field, arg)) return false; break;
      case '$gt': if (!sameType || compare(field, arg) <= 0) return false; break;
      case '$gte': if (!sameType || compare(field, arg) < 0) return false; break;
      case '$lt': if (!sameType || compare(field, arg) >= 0) return false; break;
      case '$lte': if (!sameType || compare(field, arg) > 0) return false; break;
      case '$in': if (!arg.some((x) => valueEquals(field, x))) return false; break;
      case '$exists': if ((field !== undefined) !== Boolean(num(arg))) return false; break;
      default: throw new CommandError(2, 'BadValue', `unknown operator: ${op}`);
    }
  }
  return true;
}

function matches(doc, filter) {
  if (!filter) return true;
  for (const [key, want] of Object.entries(filter)) {
    if (key === '$and') {
      if (!want.every((f) => matches(doc, f))) return false;
      continue;
    }
    const field = getPath(doc, key);
    if (isOperatorDoc(want)) {
      if (!matchOps(field, want)) return false;
    } else if (!valueEquals(field, want)) {
      return false;
    }
  }
  return true;
}

class CommandError extends Error {
  constructor(code, codeName, message) {
    super(message);
    this.code = code;
    this.codeName = codeName;
  }
}

// ---------------------------------------------------------------- commands

function indexKeyValues(index, doc) {
  return Object.keys(index.key).map((k) => getPath(doc, k));
}

function indexApplies(index, doc) {
  if (index.sparse && indexKeyValues(index, doc).every((v) => v === undefined)) return false;
  if (index.partialFilterExpression && !matches(doc, index.partialFilterExpression)) return false;
  return true;
}

// A unique index's keys, kept in a Set so that an insert costs O(1) per
// index, not a scan of the collection.  Dropped on delete or a new index and
// rebuilt lazily.  BSON bytes of the key values are the identity.
function keyIdentity(values) {
  return BSON.serialize({ k: values.map((v) => (v === undefined ? null : v)) }).toString('base64');
}

const uniqueKeySets = new WeakMap();	// index spec -> Set of key identities

function uniqueKeys(coll, index) {
  let keys = uniqueKeySets.get(index);
  if (!keys) {
    keys = new Set();
    for (const other of coll.docs) {
      if (indexApplies(index, other)) keys.add(keyIdentity(indexKeyValues(index, other)));
    }
    uniqueKeySets.set(index, keys);
  }
  return keys;
}

function forgetUniqueKeys(coll) {
  for (const index of coll.indexes) uniqueKeySets.delete(index);
}

function duplicateOf(coll, ns, doc) {
  for (const index of coll.indexes) {
    const unique = index.name === '_id_' || index.unique === true;
    if (!unique || !indexApplies(index, doc)) continue;
    const mine = indexKeyValues(index, doc);
    if (uniqueKeys(coll, index).has(keyIdentity(mine))) {
      const keyText = Object.keys(index.key).map((k, i) =>
        `${k}: ${JSON.stringify(mine[i] === undefined ? null : mine[i])}`).join(', ');
      return `E11000 duplicate key error collection: ${ns} index: ${index.name} dup key: { ${keyText} }`;
    }
  }
  return null;
}

function rememberUniqueKeys(coll, doc) {
  for (const index of coll.indexes) {
    const unique = index.name === '_id_' || index.unique === true;
    const keys = uniqueKeySets.get(index);
    if (unique && keys && indexApplies(index, doc)) keys.add(keyIdentity(indexKeyValues(index, doc)));
  }
}

function cmdInsert(db, body, seqs) {
  const name = body.insert;
  const coll = getColl(db, name, true);
  const docs = (body.documents || []).concat(seqs.documents || []);
  const ordered = body.ordered !== false;
  const writeErrors = [];
  let n = 0;
  for (let i = 0; i < docs.length; i++) {
    const doc = docs[i];
    if (doc._id === undefined) {
      // keep _id first, as the server does
      const withId = { _id: new ObjectId(), ...doc };
      docs[i] = withId;
    }
    const dup = duplicateOf(coll, `${db}.${name}`, docs[i]);
    if (dup) {
      writeErrors.push({ index: new Int32(i), code: new Int32(11000), errmsg: dup });
      if (ordered) break;
      continue;
    }
    coll.docs.push(docs[i]);
    rememberUniqueKeys(coll, docs[i]);
    n++;
  }
  const reply = { n: new Int32(n) };
  if (writeErrors.length) reply.writeErrors = writeErrors;
  reply.ok = new Double(1);
  return reply;
}

function cmdDelete(db, body, seqs) {
  const coll = getColl(db, body.delete, false);
  const deletes = (body.deletes || []).concat(seqs.deletes || []);
  let n = 0;
  for (const d of deletes) {
    if (!coll) break;
    const limit = num(d.limit) || 0;
    const keep = [];
    for (const doc of coll.docs) {
      if ((limit === 0 || n < limit) && matches(doc, d.q)) n++;
      else keep.push(doc);
    }
    coll.docs = keep;
    forgetUniqueKeys(coll);
  }
  return { n: new Int32(n), ok: new Double(1) };
}

function project(doc, projection) {
  if (!projection || Object.keys(projection).length === 0) return doc;
  const fields = Object.keys(projection).filter((k) => num(projection[k]));
  const out = {};
  if (projection._id === undefined || num(projection._id)) out._id = doc._id;
  for (const f of fields) {
    if (f !== '_id' && doc[f] !== undefined) out[f] = doc[f];
  }
  return out;
}

function cmdFind(db, body) {
  const coll = getColl(db, body.find, false);
  let docs = coll ? coll.docs.filter((d) => matches(d, body.filter)) : [];
  if (body.sort && Object.keys(body.sort).length) {
    const keys = Object.entries(body.sort).map(([k, v]) => [k, num(v) < 0 ? -1 : 1]);
    docs = docs.slice().sort((a, b) => {
      for (const [k, dir] of keys) {
        const c = compare(getPath(a, k), getPath(b, k));
        if (c) return c * dir;
      }
      return 0;
    });
  }
  const skip = num(body.skip) || 0;
  const limit = Math.abs(num(body.limit) || 0);
  docs = docs.slice(skip, limit ? skip + limit : undefined);
  docs = docs.map((d) => project(d, body.projection));
  return {
    cursor: { firstBatch: docs, id: Long.fromNumber(0), ns: `${db}.${body.find}` },
    ok: new Double(1),
  };
}

function cmdCreateIndexes(db, body) {
  const coll = getColl(db, body.createIndexes, true);
  const before = coll.indexes.length;
  for (const spec of body.indexes || []) {
    if (!spec.key || !spec.name) {
      throw new CommandError(67, 'CannotCreateIndex', 'index spec needs key and name');
    }
    const existing = coll.indexes.find((i) => i.name === spec.name);
    if (existing) {
      if (JSON.stringify(existing.key) !== JSON.stringify(spec.key)) {
        throw new CommandError(86, 'IndexKeySpecsConflict',
          `An existing index has the same name as the requested index: ${spec.name}`);
      }
      continue;
    }
    if (spec.unique) {
      // refuse when existing documents already violate it
      const seen = [];
      for (const d of coll.docs) {
        if (!indexApplies(spec, d)) continue;
        const k = indexKeyValues(spec, d);
        if (seen.some((s) => s.every((v, i) => compare(v, k[i]) === 0))) {
          throw new CommandError(11000, 'DuplicateKey', `E11000 duplicate key error index: ${spec.name}`);
        }
        seen.push(k);
      }
    }
    coll.indexes.push({ v: 2, ...spec });
    forgetUniqueKeys(coll);
  }
  return {
    numIndexesBefore: new Int32(before),
    numIndexesAfter: new Int32(coll.indexes.length),
    createdCollectionAutomatically: before === 1 && coll.docs.length === 0,
    ok: new Double(1),
  };
}

function cmdListIndexes(db, body) {
  const coll = getColl(db, body.listIndexes, false);
  if (!coll) {
    throw new CommandError(26, 'NamespaceNotFound', `ns does not exist: ${db}.${body.listIndexes}`);
  }
  return {
    cursor: {
      firstBatch: coll.indexes,
      id: Long.fromNumber(0),
      ns: `${db}.$cmd.listIndexes.${body.listIndexes}`,
    },
    ok: new Double(1),
  };
}

function cmdDrop(db, body) {
  const d = databases.get(db);
  if (!d || !d.has(body.drop)) {
    throw new CommandError(26, 'NamespaceNotFound', 'ns not found');
  }
  d.delete(body.drop);
  return { ns: `${db}.${body.drop}`, ok: new Double(1) };
}

function helloReply(conn) {
  return {
    helloOk: true,
    ismaster: true,
    isWritablePrimary: true,
    maxBsonObjectSize: new Int32(16 * 1024 * 1024),
    maxMessageSizeBytes: new Int32(48000000),
    maxWriteBatchSize: new Int32(100000),
    localTime: new Date(),
    connectionId: new Int32(conn.id),
    minWireVersion: new Int32(0),
    maxWireVersion: new Int32(MAX_WIRE_VERSION),
    readOnly: false,
    ok: new Double(1),
  };
}

function runCommand(conn, body, seqs) {
  const name = Object.keys(body)[0];
  const db = body.$db || 'admin';
  switch (name) {
    case 'hello':
    case 'isMaster':
    case 'ismaster':
      return helloReply(conn);
    case 'ping':
      return { ok: new Double(1) };
    case 'buildInfo':
    case 'buildinfo':
      return {
        version: '6.0.0',
        versionArray: [new Int32(6), new Int32(0), new Int32(0), new Int32(0)],
        maxBsonObjectSize: new Int32(16 * 1024 * 1024),
        ok: new Double(1),
      };
    case 'endSessions':
    case 'killCursors':
      return { ok: new Double(1) };
    case 'insert': return cmdInsert(db, body, seqs);
    case 'delete': return cmdDelete(db, body, seqs);
    case 'find': return cmdFind(db, body);
    case 'createIndexes': return cmdCreateIndexes(db, body);
    case 'listIndexes': return cmdListIndexes(db, body);
    case 'drop': return cmdDrop(db, body);
    default:
      throw new CommandError(59, 'CommandNotFound', `no such command: '${name}'`);
  }
}

function safeRun(conn, body, seqs) {
  try {
    return runCommand(conn, body, seqs);
  } catch (e) {
    if (e instanceof CommandError) {
      return { ok: new Double(0), errmsg: e.message, code: new Int32(e.code), codeName: e.codeName };
    }
    return { ok: new Double(0), errmsg: String(e && e.stack || e), code: new Int32(1), codeName: 'InternalError' };
  }
}

// ---------------------------------------------------------------- wire

function header(length, responseTo, opCode) {
  const h = Buffer.alloc(16);
  h.writeInt32LE(length, 0);
  h.writeInt32LE(nextRequestId++, 4);
  h.writeInt32LE(responseTo, 8);
  h.writeInt32LE(opCode, 12);
  return h;
}

function replyMsg(requestId, doc) {
  const body = BSON.serialize(doc);
  const flags = Buffer.alloc(5); // flagBits = 0, section kind 0
  return Buffer.concat([header(16 + 5 + body.length, requestId, OP_MSG), flags, body]);
}

function replyOpReply(requestId, doc) {
  const body = BSON.serialize(doc);
  const fixed = Buffer.alloc(20); // responseFlags, cursorID, startingFrom, numberReturned
  fixed.writeInt32LE(1, 16);
  return Buffer.concat([header(16 + 20 + body.length, requestId, OP_REPLY), fixed, body]);
}

function handleMessage(conn, msg) {
  const requestId = msg.readInt32LE(4);
  const opCode = msg.readInt32LE(12);
  if (opCode === OP_MSG) {
    const flags = msg.readUInt32LE(16);
    const end = msg.length - ((flags & 1) ? 4 : 0);
    let off = 20;
    let body = null;
    const seqs = {};
    while (off < end) {
      const kind = msg[off++];
      if (kind === 0) {
        const len = msg.readInt32LE(off);
        body = BSON.deserialize(msg.subarray(off, off + len), DESER);
        off += len;
      } else if (kind === 1) {
        const size = msg.readInt32LE(off);
        const stop = off + size;
        let p = off + 4;
        const z = msg.indexOf(0, p);
        const ident = msg.toString('utf8', p, z);
        p = z + 1;
        const docs = [];
        while (p < stop) {
          const len = msg.readInt32LE(p);
          docs.push(BSON.deserialize(msg.subarray(p, p + len), DESER));
          p += len;
        }
        seqs[ident] = docs;
        off = stop;
      } else {
        throw new Error(`unknown OP_MSG section kind ${kind}`);
      }
    }
    const reply = safeRun(conn, body || {}, seqs);
    if (flags & 2) return null; // moreToCome: no reply
    return replyMsg(requestId, reply);
  }
  if (opCode === OP_QUERY) {
    let off = 20; // after header + flags
    const z = msg.indexOf(0, off);
    const ns = msg.toString('utf8', off, z);
    off = z + 1 + 8; // skip numberToSkip, numberToReturn
    const len = msg.readInt32LE(off);
    let query = BSON.deserialize(msg.subarray(off, off + len), DESER);
    if (query.$query) query = query.$query;
    const db = ns.split('.')[0];
    return replyOpReply(requestId, safeRun(conn, { ...query, $db: db }, {}));
  }
  throw new Error(`unsupported opCode ${opCode}`);
}

function onConnection(socket) {
  const conn = { id: nextConnectionId++ };
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 4) {
      const len = buf.readInt32LE(0);
      if (len < 16 || len > 64 * 1024 * 1024) {
        socket.destroy();
        return;
      }
      if (buf.length < len) break;
      const msg = buf.subarray(0, len);
      buf = buf.subarray(len);
      try {
        const out = handleMessage(conn, msg);
        if (out) socket.write(out);
      } catch (e) {
        process.stderr.write(`mongo test server: ${e && e.stack || e}\n`);
        socket.destroy();
        return;
      }
    }
  });
  socket.on('error', () => {});
}

const port = Number(process.argv[2] || process.env.PORT || 27017);
const server = net.createServer(onConnection);
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
function shutdown() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
