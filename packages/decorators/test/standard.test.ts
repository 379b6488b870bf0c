import { decoratorSuite } from './suite.ts';

decoratorSuite('standard');
