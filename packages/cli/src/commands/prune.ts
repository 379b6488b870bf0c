import type { CommandSpec, Context } from '../command.ts';
import { entries } from '../format.ts';
import { createSpinner } from '../progress.ts';

export const pruneCommand: CommandSpec = {
  name: 'prune',
  summary: 'delete expired entries (and, on Redis, tag index members of expired entries)',
  usage: 'llm-cache prune',
  description: [
    'Expired entries are never served, but SQLite keeps their rows until they are pruned, and',
    'Redis keeps their tag index members. prune removes them and reports how many entries went.',
    'Entries kept for a grace period are removed only once the grace period is over.',
  ].join('\n'),
  options: {},
  examples: ['llm-cache prune --url sqlite://.cache/llm-cache.db', 'llm-cache prune --format json'],
  args: { min: 0, max: 0 },
  async run(context: Context) {
    const connection = await context.connect();
    try {
      const spinner = createSpinner(context.stderr, context.progress, 'prune');
      let removed: number;
      try {
        removed = await connection.store.prune();
      } finally {
        spinner.stop();
      }
      if (context.format === 'json') await context.json({ removed });
      else await context.say(`Pruned ${entries(removed)} that had expired.`);
      return 0;
    } finally {
      await connection.close();
    }
  },
};
