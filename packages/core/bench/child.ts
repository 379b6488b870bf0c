import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Runs `script` (a file in bench/) in a fresh Node process with the flags of this one
 * (`--expose-gc --conditions=@x/source --experimental-strip-types`) and returns the JSON object
 * it prints on its last stdout line.
 */
export async function runChild<T>(script: string, args: readonly string[]): Promise<T> {
  const file = fileURLToPath(new URL(script, import.meta.url));
  const child = spawn(process.execPath, [...process.execArgv, file, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  const last = stdout.trim().split('\n').pop() ?? '';
  if (code !== 0 || !last.startsWith('{')) {
    throw new Error(`${script} exited with ${code}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`);
  }
  return JSON.parse(last) as T;
}
