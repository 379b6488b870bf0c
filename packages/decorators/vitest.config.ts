import { workspaceProject } from '../../vitest.shared.ts';

export default workspaceProject('decorators', {
  // Decorated fixtures are compiled by the real tsc (both decorator modes) before any test runs.
  globalSetup: ['test/global-setup.ts'],
});
