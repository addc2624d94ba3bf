import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface MigrationsFingerprint {
  /** sha256 over every migrations/*.sql file name and content, in name order. */
  readonly hash: string;
  readonly files: string[];
}

/**
 * Fingerprints the SQL migrations at synth time. The migrations custom
 * resource carries the hash as a property, so CloudFormation sends it an
 * Update (and the migrator runs) whenever a migration is added or changed.
 */
export function fingerprintMigrations(repoRoot: string): MigrationsFingerprint {
  const dir = join(repoRoot, 'migrations');
  if (!existsSync(dir)) {
    throw new Error(`no migrations folder at ${dir}: the migrations custom resource needs it`);
  }
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort();
  if (files.length === 0) {
    throw new Error(`no *.sql files in ${dir}`);
  }
  const h = createHash('sha256');
  for (const f of files) {
    const body = readFileSync(join(dir, f));
    // Length-prefix name and body so that no two different sets hash alike.
    h.update(`${f.length}:${f}\n${body.length}:`);
    h.update(body);
    h.update('\n');
  }
  return { hash: h.digest('hex'), files };
}
