import { createInterface } from 'node:readline';
import type { Context } from './command.ts';
import { CliError, usageError } from './io.ts';

/**
 * Asks before a destructive operation unless --yes was given. Without a terminal to ask on, it
 * refuses rather than guess: a script must say --yes.
 */
export async function confirm(context: Context, question: string): Promise<void> {
  if (context.flag('yes')) return;
  if (!context.stdin.isTTY || !context.stderr.isTTY) {
    throw usageError(`${context.command} deletes entries: pass --yes to confirm (no terminal to ask on)`);
  }
  context.stderr.write(`${question} [y/N] `);
  const lines = createInterface({ input: context.stdin, terminal: false });
  try {
    for await (const answer of lines) {
      if (/^\s*y(es)?\s*$/i.test(answer)) return;
      break;
    }
  } finally {
    lines.close();
  }
  throw new CliError('cancelled, nothing was deleted');
}
