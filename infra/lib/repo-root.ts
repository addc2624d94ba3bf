// Where the repository root is: the Cargo workspace, migrations/ and
// contracts/ live there. A module of its own so that lib/contracts.ts can
// find it at load time without importing the app (which imports the stack).

import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The repository root: $COLLECTIONS_REPO_ROOT, else the folder above infra/. */
export function defaultRepoRoot(): string {
  if (process.env.COLLECTIONS_REPO_ROOT) return resolve(process.env.COLLECTIONS_REPO_ROOT);
  // This file runs from infra/dist/lib/ (compiled) — walk up to the folder holding infra/.
  let dir = resolve(__dirname);
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'infra', 'package.json')) && existsSync(join(dir, 'Cargo.toml'))) return dir;
    dir = resolve(dir, '..');
  }
  throw new Error(`cannot find the repository root above ${__dirname}; set COLLECTIONS_REPO_ROOT`);
}
