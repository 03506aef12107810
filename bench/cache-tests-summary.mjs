// Summarises results.json files of the HTTP cache test suite
// (http-tests/cache-tests) with the suite's own logic, as markdown.
//
//   node bench/cache-tests-summary.mjs --suite DIR [--list LABEL]... [--details] LABEL=results.json...
//   node bench/cache-tests-summary.mjs --suite DIR --published
//
// Each result goes through the suite's `determineTestResult`
// (test-engine/lib/results.mjs) with the tests of its `tests/index.mjs`,
// imported from DIR rather than copied, so that the counts are the ones
// cache-tests.fyi shows for the same suite version. One table row per
// LABEL; for each `--list LABEL`, its failing tests with their names (and
// with `--details`, each test's group and the suite's message), and how
// many dependency failures hang on which failed test. `--published` adds
// a row for each cache (not browser) whose results the suite publishes in
// its results/ folder.
//
// How the suite counts (read from results.mjs): a test whose `depends_on`
// has a test that is neither pass nor check "yes" is a dependency failure,
// whatever its own result; otherwise the test's `kind` decides: required
// (the default) gives pass or fail, `optimal` pass or optional fail,
// `check` yes or no. A setup failure (the cache broke a step the test
// needs before its assertion) and a harness failure (no answer, timeout)
// come first.

import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

const args = process.argv.slice(2)
let suiteDir
let details = false
let published = false
const toList = new Set()
const systems = []
while (args.length) {
  const arg = args.shift()
  if (arg === '--suite') suiteDir = args.shift()
  else if (arg === '--list') toList.add(args.shift())
  else if (arg === '--details') details = true
  else if (arg === '--published') published = true
  else if (arg.includes('=')) {
    const at = arg.lastIndexOf('=')
    systems.push({ label: arg.slice(0, at), file: arg.slice(at + 1) })
  } else {
    console.error(`unknown argument ${arg}`)
    process.exit(2)
  }
}
if (!suiteDir || (systems.length === 0 && !published)) {
  console.error('usage: cache-tests-summary.mjs --suite DIR [--list LABEL]... [--details] [--published] LABEL=results.json...')
  process.exit(2)
}

const load = path => import(pathToFileURL(resolve(suiteDir, path)).href)
if (published) {
  for (const item of (await load('results/index.mjs')).default) {
    if (item.type === 'browser') continue
    systems.push({ label: `${item.name} ${item.version} (published)`, file: resolve(suiteDir, 'results', item.file) })
  }
}
const { determineTestResult, resultTypes } = await load('test-engine/lib/results.mjs')
const suites = (await load('tests/index.mjs')).default

// The columns, in the order the suite lists its result types; harness
// failures and retries are rare and share one column.
const columns = [
  ['pass', [resultTypes.pass]],
  ['fail', [resultTypes.fail]],
  ['optional fail', [resultTypes.optional_fail]],
  ['check yes', [resultTypes.yes]],
  ['check no', [resultTypes.no]],
  ['setup fail', [resultTypes.setup_fail]],
  ['dependency fail', [resultTypes.dependency_fail]],
  ['harness fail / retry', [resultTypes.harness_fail, resultTypes.retry]]
]
const nameOf = new Map([...Object.entries(resultTypes)].map(([name, type]) => [type, name]))

// The suite's client skips browser-only tests when it tests a proxy
// (test-engine/client/runner.mjs): they are not counted.
const tests = suites.flatMap(suite => suite.tests.map(test => ({ ...test, suite: suite.name })))
  .filter(test => test.browser_only !== true)
const byId = new Map(suites.flatMap(suite => suite.tests).map(test => [test.id, test]))

// The test at the root of a dependency failure: follow depends_on down to
// the first dependency that failed on its own account.
function rootCause (id, results) {
  for (const dep of byId.get(id).depends_on || []) {
    const type = determineTestResult(suites, dep, results)
    if (type !== resultTypes.pass && type !== resultTypes.yes) {
      return type === resultTypes.dependency_fail ? rootCause(dep, results) : dep
    }
  }
  return id
}

// Names are markdown already (backticks); only table-breaking bars and
// newlines need care.
const cell = text => String(text).replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ').trim()

const rows = []
const lists = []
for (const { label, file } of systems) {
  const results = JSON.parse(readFileSync(file, 'utf8'))
  const verdicts = tests.map(test => ({ test, type: determineTestResult(suites, test.id, results) }))
  const counted = verdicts.filter(v => v.type !== resultTypes.untested)
  const counts = columns.map(([, types]) => counted.filter(v => types.includes(v.type)).length)
  const untested = verdicts.length - counted.length
  rows.push(`| ${cell(label)} | ${counts.join(' | ')} | ${counted.length}${untested ? ` (${untested} untested)` : ''} |`)

  if (toList.has(label)) {
    const order = [resultTypes.fail, resultTypes.optional_fail, resultTypes.setup_fail,
      resultTypes.harness_fail, resultTypes.retry, resultTypes.no]
    lists.push('', `Failing tests of ${label} (required failures first; then optional, ` +
      'setup and harness failures, and the checks it answered "no"):', '')
    for (const type of order) {
      for (const { test } of verdicts.filter(v => v.type === type)) {
        const message = Array.isArray(results[test.id]) ? results[test.id][1] : ''
        lists.push(`- ${nameOf.get(type)}: \`${test.id}\`: ${cell(test.name)}` +
          (details ? ` [${test.suite}]` + (message ? ` (${cell(message)})` : '') : ''))
      }
    }
    // Hundreds of dependency failures are told by what they hang on.
    // Hundreds of dependency failures are told by what they hang on, and
    // which groups of the suite they fall in.
    const roots = new Map()
    for (const { test } of verdicts.filter(v => v.type === resultTypes.dependency_fail)) {
      const root = rootCause(test.id, results)
      if (!roots.has(root)) roots.set(root, new Map())
      const groups = roots.get(root)
      groups.set(test.suite, (groups.get(test.suite) || 0) + 1)
    }
    const total = groups => [...groups.values()].reduce((a, b) => a + b, 0)
    if (roots.size) {
      lists.push('', `Dependency failures of ${label}, by the failed test they hang on (and by group):`, '')
      for (const [root, groups] of [...roots].sort((a, b) => total(b[1]) - total(a[1]))) {
        const byGroup = [...groups].sort((a, b) => b[1] - a[1]).map(([group, n]) => `${group} ${n}`).join(', ')
        lists.push(`- \`${root}\` (${nameOf.get(determineTestResult(suites, root, results))}): ` +
          `${total(groups)} (${byGroup})`)
      }
    }
  }
}

console.log(`| system | ${columns.map(([name]) => name).join(' | ')} | total |`)
console.log(`| --- | ${columns.map(() => '---:').join(' | ')} | ---: |`)
console.log(rows.join('\n'))
if (lists.length) console.log(lists.join('\n'))
