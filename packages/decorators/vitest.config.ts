import { defineProject } from 'vitest/config';

export default defineProject({
  resolve: { conditions: ['@x/source'] },
  ssr: { resolve: { conditions: ['@x/source'] } },
  test: {
    name: 'decorators',
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    environment: 'node',
    // Decorated fixtures are compiled by the real tsc (both decorator modes) before any test runs.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 30_000,
  },
});
