import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { run } from '../src/index.ts';
import { exportedRecords, liveKeys, useSeededStore } from './helpers.ts';

/**
 * What only a terminal sees: the confirmation prompt and progress redrawn in place. A child process
 * has no terminal, so these run `run()` in-process with streams that say they are TTYs.
 */
const fixture = useSeededStore();

function terminal(input = '') {
  const stdin = Object.assign(new PassThrough(), { isTTY: true });
  const stdout = Object.assign(new PassThrough(), { isTTY: true });
  const stderr = Object.assign(new PassThrough(), { isTTY: true });
  let out = '';
  let err = '';
  stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  stderr.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  if (input) stdin.write(input);
  return { io: { stdin, stdout, stderr, env: {} }, out: () => out, err: () => err };
}

describe('llm-cache on a terminal', () => {
  it('asks before clearing, and deletes only on yes', async () => {
    const no = terminal('n\n');
    expect(await run(['clear', '--tier', 'tools', '--url', fixture.url], no.io)).toBe(1);
    expect(no.err()).toContain(`Delete 2 entries (tier tools, every namespace) from ${fixture.url}? [y/N] `);
    expect(no.err()).toContain('llm-cache: cancelled, nothing was deleted\n');
    expect(await liveKeys(fixture.path)).toContain(fixture.seeded.toolA);

    const yes = terminal('y\n');
    expect(await run(['clear', '--tier', 'tools', '--url', fixture.url], yes.io)).toBe(0);
    expect(yes.out()).toBe('Removed 2 entries (tier tools, every namespace).\n');
    expect(await liveKeys(fixture.path)).not.toContain(fixture.seeded.toolA);
  });

  it('redraws progress in place on stderr and clears the line when done', async () => {
    const tty = terminal();
    expect(await run(['export', '--url', fixture.url], tty.io)).toBe(0);
    const shown = tty.err().replaceAll('\r', '<CR>').replaceAll('\u001b[K', '<EL>');
    expect(shown).toMatch(
      /^<CR>export: 8 entries, \d+\.\ds<EL><CR><EL>Exported 8 entries and the statistics counters\.\n$/,
    );
    expect(exportedRecords(tty.out())).toHaveLength(8);

    const quiet = terminal();
    expect(await run(['export', '--url', fixture.url, '--quiet'], quiet.io)).toBe(0);
    expect(quiet.err()).toBe('');
  });
});
