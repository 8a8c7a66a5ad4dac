// node-postgres clients sharing ONE server connection through pglittle;
// run by tests/integration/drivers.rs.
//
// A query with values is Parse of the unnamed statement + Bind + Describe +
// Execute + Sync; a query with a name ({ name, text, values }) is parsed once
// per connection and then only bound, so every client's `mine` (same name,
// its own text) must stay its own. Odd clients use pg's pipeline mode and
// send each round's queries at once. Each client sets its own search_path,
// application_name, TimeZone and IntervalStyle once, then every round checks
// them, runs queries whose results name the client (json, arrays, an enum
// and a composite type) and one that fails, and commits or rolls back a
// transaction.
//
// As in tests/integration/python/one_server.py: a failed step is recorded
// and the client goes on (a client whose connection broke stops), and the
// report groups the failures by step. Same environment (PGL_HOST, PGL_PORT,
// PGL_USER, PGL_PASSWORD, PGL_DB, PGL_PREFIX, PGL_CLIENTS, PGL_ROUNDS,
// PGL_ONE_SERVER, PGL_TIMEOUT). Exit status: 0 when every client passed; 1
// with the failures on stdout; 77 when `pg` is not installed (npm ci in
// tests/integration/node).
'use strict'

let pg
try {
  pg = require('pg')
} catch (e) {
  console.log(`skip: ${e.message.split('\n')[0]}`)
  process.exit(77)
}
const { isDeepStrictEqual, inspect } = require('node:util')

const env = process.env
const PREFIX = env.PGL_PREFIX
const CLIENTS = Number(env.PGL_CLIENTS)
const ROUNDS = Number(env.PGL_ROUNDS)
const TIMEOUT_MS = Number(env.PGL_TIMEOUT || '60') * 1000
const MAX_FAILURES = 200
// Types and the log table are named with their schema, so only the steps
// about search_path depend on it.
const TYPES = `${PREFIX}_t`
const MOOD = `${TYPES}.mood`
const PAIR = `${TYPES}.pair`
const LOG = `${TYPES}.log`
const MOODS = ['sad', 'ok', 'happy']
const TIME_ZONES = [
  ['UTC', '2024-01-15 12:00:00+00'],
  ['Asia/Tokyo', '2024-01-15 21:00:00+09'],
  ['America/New_York', '2024-01-15 07:00:00-05'],
  ['Asia/Kolkata', '2024-01-15 17:30:00+05:30'],
  ['Europe/Berlin', '2024-01-15 13:00:00+01'],
  ['Australia/Adelaide', '2024-01-15 22:30:00+10:30'],
  ['Pacific/Chatham', '2024-01-16 01:45:00+13:45'],
  ['America/Sao_Paulo', '2024-01-15 09:00:00-03'],
]
const INSTANT = "timestamptz '2024-01-15 12:00:00+00'"
const INTERVAL_STYLES = [
  ['postgres', '1 day 02:03:04'],
  ['iso_8601', 'P1DT2H3M4S'],
  ['sql_standard', '1 2:03:04'],
  ['postgres_verbose', '@ 1 day 2 hours 3 mins 4 secs'],
]
const INTERVAL = "interval '1 day 02:03:04'"
// statement_timeout is untracked: a client's SET of it lasts to the end of
// its transaction through pglittle (and for the session on PostgreSQL), so
// a client may see the default or its own value, never another client's.
const SETTINGS_SQL =
  "select current_setting('search_path') as sp, current_setting('application_name') as app," +
  " current_setting('TimeZone') as tz, current_setting('IntervalStyle') as ivs," +
  " current_setting('statement_timeout') as timeout," +
  " (select setting = reset_val from pg_settings where name = 'statement_timeout') as timeout_is_default," +
  ' pg_backend_pid() as pid'

class Mismatch extends Error {}
class Stop extends Error {}

function show(x) {
  return inspect(x, { breakLength: Infinity })
}

function expect(got, want, what) {
  if (!isDeepStrictEqual(got, want)) throw new Mismatch(`${what}: got ${show(got)}, want ${show(want)}`)
}

function expectAll(checks) {
  const wrong = checks
    .filter(([got, want]) => !isDeepStrictEqual(got, want))
    .map(([got, want, what]) => `${what}: got ${show(got)}, want ${show(want)}`)
  if (wrong.length) throw new Mismatch(wrong.join('; '))
}

let firstTrace = null

class Client {
  constructor(i) {
    this.i = i
    this.schema = `${PREFIX}_c${i}`
    this.searchPath = `${this.schema}, ${TYPES}`
    this.app = `node-pg-${i}`
    ;[this.timeZone, this.instantText] = TIME_ZONES[i % TIME_ZONES.length]
    ;[this.intervalStyle, this.intervalText] = INTERVAL_STYLES[i % INTERVAL_STYLES.length]
    this.statementTimeout = `${10 + i}s` // SET in its transactions only
    this.pipeline = i % 2 === 1
    this.where = 'connecting'
    this.failures = [] // [step, where, message]
    this.committed = [] // rounds whose log row was committed
    this.pids = new Set()
    this.broken = false
    this.conn = null
  }

  record(step, e) {
    this.failures.push([step, this.where, `${e.constructor.name}: ${e.message}`.replace(/\n/g, ' | ')])
    if (!(e instanceof Mismatch) && firstTrace === null) firstTrace = `client ${this.i} at ${this.where}:\n${e.stack}`
  }

  // Runs one step; a failure in it is recorded and the client goes on.
  async step(r, name, body) {
    this.where = r === null ? name : `round ${r}: ${name}`
    try {
      await body()
    } catch (e) {
      if (e instanceof Stop) throw e
      this.record(name, e)
      if (this.broken || this.failures.length >= MAX_FAILURES) throw new Stop()
      // Leave a failed transaction block (a no-op outside one).
      try {
        await this.conn.query('ROLLBACK')
      } catch (again) {
        this.record(`recovering after: ${name}`, again)
        throw new Stop()
      }
    }
  }

  checkSettings(s) {
    this.pids.add(s.pid)
    expectAll([
      [s.sp, this.searchPath, 'search_path (SET by this client)'],
      [s.app, this.app, 'application_name (SET by this client)'],
      [s.tz, this.timeZone, 'TimeZone (SET by this client)'],
      [s.ivs, this.intervalStyle, 'IntervalStyle (SET by this client)'],
    ])
    if (!s.timeout_is_default && s.timeout !== this.statementTimeout) {
      throw new Mismatch(
        `statement_timeout: got '${s.timeout}', want the default or this client's own ` +
          `'${this.statementTimeout}' (another client's SET leaked)`
      )
    }
  }
}

async function one(client, query, values) {
  return (await client.query(query, values)).rows[0]
}

async function connect(c) {
  const client = new pg.Client({
    host: env.PGL_HOST,
    port: Number(env.PGL_PORT),
    user: env.PGL_USER,
    password: env.PGL_PASSWORD || undefined,
    database: env.PGL_DB,
    pipeline: c.pipeline,
  })
  client.on('error', () => {
    c.broken = true
  })
  client.on('end', () => {
    c.broken = true
  })
  await client.connect()
  c.conn = client
  await c.step(null, 'session SETs (one simple Query)', () =>
    client.query(
      `SET search_path TO ${c.searchPath}; SET application_name TO '${c.app}'; ` +
        `SET TimeZone TO '${c.timeZone}'; SET IntervalStyle TO ${c.intervalStyle}`
    )
  )
  return client
}

// The steps of one round that need no transaction, as [name, run, check]:
// a pipelined client sends all the queries at once, then checks them.
function roundSteps(c, client, r) {
  const mood = MOODS[(c.i + r) % MOODS.length]
  return [
    ['settings', () => one(client, SETTINGS_SQL), (s) => c.checkSettings(s)],
    [
      'whoami() through search_path',
      () => one(client, 'select whoami() as who, $1::int as r', [r]),
      (x) => expect(x, { who: c.schema, r }, "whoami() resolved through this client's search_path"),
    ],
    [
      'a query only this client sends',
      () => one(client, `select '${c.schema}:' || $1::text as v`, [String(r)]),
      (x) => expect(x.v, `${c.schema}:${r}`, 'its result'),
    ],
    [
      'a query every client sends',
      () => one(client, 'select $1::int * 1000 + $2::int as v', [c.i, r]),
      (x) => expect(x.v, c.i * 1000 + r, "its result for this client's parameters"),
    ],
    [
      "named statement 'mine', each client's own text",
      () =>
        one(client, {
          name: 'mine',
          text: `select $1::int * ${c.i + 1} as v, '${c.schema}'::text as who`,
          values: [r],
        }),
      (x) => expect(x, { v: r * (c.i + 1), who: c.schema }, 'its result'),
    ],
    [
      "named statement 'everyones', the same text in every client",
      () => one(client, { name: 'everyones', text: 'select whoami() as who, $1::int + 1 as n', values: [r] }),
      (x) => expect(x, { who: c.schema, n: r + 1 }, 'its result (whoami() through search_path)'),
    ],
    [
      'enum and composite',
      () =>
        one(
          client,
          `select $1::${MOOD} as m, array[$1::${MOOD}, 'ok']::text as a, row($2::text, $3::int)::${PAIR}::text as p,` +
            ` (row($2::text, $3::int)::${PAIR}).n * 2 as n2`,
          [mood, c.schema, r]
        ),
      (x) => expect(x, { m: mood, a: `{${mood},ok}`, p: `(${c.schema},${r})`, n2: 2 * r }, 'the row'),
    ],
    [
      'arrays',
      () =>
        one(client, 'select $1::int[] || $2::int as ints, $3::text[] as texts', [[c.i, r], 7, [c.schema, null, 'x,y']]),
      (x) => expect(x, { ints: [c.i, r, 7], texts: [c.schema, null, 'x,y'] }, 'int[] and text[] round trips'),
    ],
    [
      'json/jsonb',
      () =>
        one(client, "select $1::jsonb || jsonb_build_object('who', $2::text) as jb, json_build_object('i', $3::int) as j", [
          JSON.stringify({ i: c.i, r }),
          c.schema,
          c.i,
        ]),
      (x) => expect(x, { jb: { i: c.i, r, who: c.schema }, j: { i: c.i } }, 'jsonb and json round trips'),
    ],
    [
      'a query that fails',
      () =>
        client.query('select 1 / $1::int as v', [0]).then(
          () => 'no error',
          (e) => e.code
        ),
      (x) => expect(x, '22012', 'the SQLSTATE of select 1 / 0'),
    ],
    [
      "rendering under this client's TimeZone and IntervalStyle",
      () => one(client, `select ${INSTANT}::text as t, ${INTERVAL}::text as iv`),
      (x) => expect(x, { t: c.instantText, iv: c.intervalText }, 'a timestamptz and an interval'),
    ],
  ]
}

async function transaction(c, client, r) {
  await c.step(r, 'transaction', async () => {
    await client.query('BEGIN')
    await client.query(`insert into ${LOG} values ($1, $2, $3)`, [c.i, r, c.schema])
    await client.query("SET LOCAL application_name TO 'in-a-transaction'")
    // Untracked: lasts to the end of this transaction, and must never reach
    // another client.
    await client.query(`SET statement_timeout TO '${c.statementTimeout}'`)
    const inside = await one(
      client,
      `select current_setting('application_name') as app, (select count(*)::int from ${LOG} where client = $1 and round = $2) as n`,
      [c.i, r]
    )
    expect(inside, { app: 'in-a-transaction', n: 1 }, "application_name after SET LOCAL, and this transaction's own insert")
    if (r % 3 === 2) {
      await client.query('ROLLBACK')
    } else {
      await client.query('COMMIT')
      c.committed.push(r)
    }
  })
  await c.step(r, "application_name once SET LOCAL's transaction ended", async () =>
    expect((await one(client, "select current_setting('application_name') as app")).app, c.app, 'on the server')
  )
}

async function work(c, client) {
  for (let r = 0; r < ROUNDS; r++) {
    const steps = roundSteps(c, client, r)
    if (c.pipeline) {
      // Send them all; each check waits for its own reply.
      const replies = steps.map(([, run]) => run())
      replies.forEach((p) => p.catch(() => {}))
      for (const [k, [name, , check]] of steps.entries()) {
        await c.step(r, `${name} (pipelined)`, async () => check(await replies[k]))
      }
    } else {
      for (const [name, run, check] of steps) {
        await c.step(r, name, async () => check(await run()))
      }
    }
    await transaction(c, client, r)
  }
  await c.step(null, 'the committed rows', async () => {
    const rows = (await client.query(`select round from ${LOG} where client = $1 order by round`, [c.i])).rows
    expect(
      rows.map((x) => x.round),
      c.committed,
      "this client's committed rounds (and none it rolled back)"
    )
  })
}

async function closeQuietly(client) {
  try {
    await Promise.race([client.end(), new Promise((resolve) => setTimeout(resolve, 5000).unref())])
  } catch (_) {
    // closing is best effort
  }
}

async function guard(c, promise, client) {
  try {
    const result = await promise
    if (client) c.where = 'done'
    return result
  } catch (e) {
    if (!(e instanceof Stop)) c.record(c.where, e)
    c.where = 'stopped'
    // Let the others go on: this client may hold the one server mid-transaction.
    if (client) await closeQuietly(client)
    return null
  }
}

function report(label, clients) {
  const failed = clients.filter((c) => c.failures.length)
  const pids = new Set(clients.flatMap((c) => [...c.pids]))
  if (failed.length) {
    const byStep = new Map() // step -> { who, times, first }
    for (const c of clients) {
      for (const [step, where, message] of c.failures) {
        if (!byStep.has(step)) byStep.set(step, { who: new Set(), times: 0, first: `client ${c.i} at ${where}: ${message}` })
        const entry = byStep.get(step)
        entry.who.add(c.i)
        entry.times += 1
      }
    }
    const total = clients.reduce((n, c) => n + c.failures.length, 0)
    console.log(`FAIL ${label}: ${failed.length} of ${clients.length} clients failed, ${total} failures`)
    // Hangs last: they follow from what went wrong before.
    const steps = [...byStep].sort(([a], [b]) => (a === 'hung') - (b === 'hung'))
    for (const [step, { who, times, first }] of steps) {
      console.log(`- ${step}: ${who.size} client(s), ${times} time(s); first: ${first}`)
    }
    // Where each hung client waited tells who held the server.
    const hung = clients.filter((c) => c.failures.some(([step]) => step === 'hung'))
    for (const c of hung.slice(1)) console.log(`  also hung: client ${c.i} at ${c.where}`)
    if (firstTrace) console.error(firstTrace)
    return 1
  }
  if (env.PGL_ONE_SERVER === '1' && pids.size !== 1) {
    console.log(`FAIL ${label}: the clients ran on ${pids.size} backends ${[...pids]}, not the pool's one`)
    return 1
  }
  console.log(`ok ${label}: ${clients.length} clients x ${ROUNDS} rounds on ${pids.size} backend(s)`)
  return 0
}

async function main() {
  const started = Date.now()
  const clients = [...Array(CLIENTS).keys()].map((i) => new Client(i))
  const conns = await Promise.all(clients.map((c) => guard(c, connect(c))))
  if (conns.every((x) => x)) {
    let timer
    const hung = new Promise((resolve) => {
      timer = setTimeout(resolve, TIMEOUT_MS)
    })
    await Promise.race([Promise.all(clients.map((c, k) => guard(c, work(c, conns[k]), conns[k]))), hung])
    clearTimeout(timer)
    for (const c of clients) {
      if (c.where !== 'done' && c.where !== 'stopped') c.failures.push(['hung', c.where, `no reply within ${TIMEOUT_MS / 1000}s`])
    }
  }
  await Promise.all(conns.filter((x) => x).map(closeQuietly))
  const label = `node-postgres ${require('pg/package.json').version} (${((Date.now() - started) / 1000).toFixed(1)}s)`
  process.exit(report(label, clients))
}

main()
