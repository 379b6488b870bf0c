import { defineProject, type UserWorkspaceConfig } from 'vitest/config';

type ProjectTest = NonNullable<UserWorkspaceConfig['test']>;

/**
 * One package's vitest project: workspace packages resolve to their TypeScript source through
 * the `@x/source` export condition, so `pnpm test` needs no build.
 */
export function workspaceProject(name: string, test: ProjectTest = {}): UserWorkspaceConfig {
  return defineProject({
    resolve: { conditions: ['@x/source'] },
    ssr: { resolve: { conditions: ['@x/source'] } },
    test: {
      name,
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      environment: 'node',
      testTimeout: 30_000,
      ...test,
    },
  });
}
