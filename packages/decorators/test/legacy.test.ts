import { decoratorSuite } from './suite.ts';

decoratorSuite('legacy');
