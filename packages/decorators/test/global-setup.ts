/**
 * Compiles test/fixtures and examples with the repository's real `tsc`, once per decorator mode,
 * into test/.out/<mode>/. The tests import the emitted JavaScript: vitest's transform does not
 * compile standard decorators, and the point is to run exactly what users' compilers emit. The
 * emitted files import `@x/cache-decorators` and `@x/cache-core` by name, which resolve to the
 * sources here (the `@x/source` condition), so no build is needed first.
 */
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const run = promisify(execFile);

export const MODES = ['standard', 'legacy'] as const;

export default async function compileFixtures(): Promise<void> {
  const require = createRequire(import.meta.url);
  const tsc = join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');
  rmSync(join(here, '.out'), { recursive: true, force: true });
  await Promise.all(
    MODES.map(async (mode) => {
      const project = join(here, `tsconfig.${mode}.json`);
      try {
        await run(process.execPath, [tsc, '-p', project], { cwd: here });
      } catch (error) {
        const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
        throw new Error(`tsc -p test/tsconfig.${mode}.json failed:\n${stdout}${stderr}`);
      }
    }),
  );
}
