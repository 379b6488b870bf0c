import { cachedToolSuite } from './cached-tool-suite.ts';

cachedToolSuite('legacy');
