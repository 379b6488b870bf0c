import { workspaceProject } from '../../vitest.shared.ts';

// The demo test builds the app with tsc and runs it end to end.
export default workspaceProject('demo', { testTimeout: 120_000 });
