#!/usr/bin/env node
// Check repo exports (CAR v1) with the reference implementation, @atproto/repo.
//
// Usage: node verify_car.js KIT_DIR [MANIFEST]
//   KIT_DIR   the installed real-PDS kit (tests/support/realpds.py:ensure_installed),
//             whose node_modules holds @atproto/repo; nothing is downloaded.
//   MANIFEST  a JSON file (stdin when absent): [{"car": path, "did": ..., "didKey": ...}]
//
// Prints one JSON line per CAR:
//   {"car", "ok", "records", "commit", "leaves": {key: cid}, "error"}
// and exits 1 when any CAR is not ok, 2 on bad usage.
//
// Per CAR, all through @atproto/repo:
//   1. readCarWithRoot: every block's sha256 must match its CID.
//   2. verifyRepo: the commit parses as a v3 commit for `did`, its signature verifies
//      against `didKey` (k256 or p256, low-S compact only), every MST node parses and
//      every leaf's record block is present.
//   3. Each leaf's record decodes as a lexicon record (strict DAG-CBOR).
//   4. MST shape: keys strictly ascending, every key on the layer its hash gives, and
//      the tree @atproto/repo builds from the same (key, cid) pairs has the same root
//      CID as the commit's `data`. Identical root CIDs mean byte-identical nodes, so
//      this also covers prefix compression and node encoding.
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const { createRequire } = require('node:module')

async function verifyOne(repo, entry) {
  const bytes = fs.readFileSync(entry.car)
  const { root, blocks } = await repo.readCarWithRoot(bytes)
  const verified = await repo.verifyRepo(blocks, root, entry.did, entry.didKey)
  const storage = new repo.MemoryBlockstore(blocks)
  for (const create of verified.creates) {
    await storage.readRecord(create.cid)
  }

  const dataCid = (await storage.readObj(root, repo.def.commit)).data
  const tree = repo.MST.load(storage, dataCid)
  await checkLayers(repo, tree, await tree.getLayer(), true)
  const leaves = await tree.leaves()
  for (let i = 1; i < leaves.length; i++) {
    if (!(leaves[i - 1].key < leaves[i].key)) {
      throw new Error(`MST keys out of order: ${leaves[i - 1].key} then ${leaves[i].key}`)
    }
  }

  let rebuilt = await repo.MST.create(new repo.MemoryBlockstore())
  for (const leaf of leaves) {
    rebuilt = await rebuilt.add(leaf.key, leaf.value)
  }
  const canonical = await rebuilt.getPointer()
  if (!canonical.equals(dataCid)) {
    throw new Error(`MST is not canonical: root ${dataCid}, @atproto/repo builds ${canonical}`)
  }

  const byKey = {}
  for (const leaf of leaves) byKey[leaf.key] = leaf.value.toString()
  return { records: leaves.length, commit: root.toString(), leaves: byKey }
}

// Names the first key that sits on the wrong layer; the root-CID comparison is the
// authority, this only makes the error say where the shape went wrong.
async function checkLayers(repo, node, layer, isRoot) {
  const entries = await node.getEntries()
  if (!isRoot && entries.length === 0) {
    throw new Error(`empty MST node ${node.pointer} below the root`)
  }
  for (const entry of entries) {
    if (entry.isTree()) {
      if (layer === 0) throw new Error(`MST node ${entry.pointer} below layer 0`)
      await checkLayers(repo, entry, layer - 1, false)
    } else {
      const keyLayer = await repo.mstUtil.leadingZerosOnHash(entry.key)
      if (keyLayer !== layer) {
        throw new Error(`MST key ${entry.key} (layer ${keyLayer}) in a layer-${layer} node`)
      }
    }
  }
}

async function main() {
  const [kitDir, manifestPath] = process.argv.slice(2)
  if (!kitDir) {
    process.stderr.write('usage: node verify_car.js KIT_DIR [MANIFEST]\n')
    return 2
  }
  // Resolve from the kit, not from this file: the kit's node_modules is elsewhere.
  const kitRequire = createRequire(path.join(path.resolve(kitDir), 'package.json'))
  const repo = kitRequire('@atproto/repo')
  const manifest = JSON.parse(fs.readFileSync(manifestPath ?? 0, 'utf8'))
  let failed = 0
  for (const entry of manifest) {
    let line
    try {
      line = { car: entry.car, ok: true, ...(await verifyOne(repo, entry)), error: null }
    } catch (err) {
      failed++
      line = { car: entry.car, ok: false, records: null, error: String(err?.message ?? err) }
    }
    process.stdout.write(JSON.stringify(line) + '\n')
  }
  return failed ? 1 : 0
}

main().then(
  (code) => {
    process.exitCode = code
  },
  (err) => {
    process.stderr.write(`${err?.stack ?? err}\n`)
    process.exitCode = 2
  },
)
