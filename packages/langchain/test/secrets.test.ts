import { describe, expect, it } from 'vitest';
import { keyable } from '../src/normalize.ts';
import { isRuntimeOption, parseLlmString, redactLlmString, SecretFilter } from '../src/secrets.ts';

describe('parseLlmString', () => {
  it('reads the key:JSON pairs LangChain joins with commas, commas inside values included', () => {
    const llmString =
      '_model:"base_chat_model",_type:"openai",configuration:{"apiKey":"sk-x","baseURL":"https://a,b"},' +
      'model_name:"gpt-4o-mini",stop:["\\n",","],temperature:0.2,tools:[{"type":"function","function":{"name":"f"}}]';
    expect(parseLlmString(llmString)).toEqual({
      _model: 'base_chat_model',
      _type: 'openai',
      configuration: { apiKey: 'sk-x', baseURL: 'https://a,b' },
      model_name: 'gpt-4o-mini',
      stop: ['\n', ','],
      temperature: 0.2,
      tools: [{ type: 'function', function: { name: 'f' } }],
    });
  });

  it('skips the pairs of function values, which LangChain writes as undefined', () => {
    expect(parseLlmString('interrupt:undefined,model:"m",writer:undefined')).toEqual({ model: 'm' });
  });

  it('gives up on strings of another form', () => {
    expect(parseLlmString('not a key string')).toBeUndefined();
    expect(parseLlmString('a:{"open":')).toBeUndefined();
  });
});

describe('isRuntimeOption', () => {
  it("drops LangGraph's runtime and keeps provider parameters of the same names", () => {
    expect(isRuntimeOption('executionInfo', { taskId: 't' })).toBe(true);
    expect(isRuntimeOption('store', { mget: 1 })).toBe(true);
    expect(isRuntimeOption('context', { userId: 'u' })).toBe(true);
    expect(isRuntimeOption('store', true)).toBe(false);
    expect(isRuntimeOption('context', [1, 2, 3])).toBe(false);
    expect(isRuntimeOption('temperature', 0)).toBe(false);
    expect(isRuntimeOption('config', { callbacks: [] })).toBe(true);
    expect(isRuntimeOption('version', 'v2')).toBe(true);
    // The graph run's options, which LangGraph hands on to the nodes' config.
    for (const [name, value] of Object.entries({
      durability: 'exit',
      checkpointDuring: false,
      streamMode: 'values',
      outputKeys: ['messages'],
      interruptBefore: ['tools'],
      interruptAfter: '*',
    })) {
      expect(isRuntimeOption(name, value), name).toBe(true);
    }
    expect(
      isRuntimeOption('version', '5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa'),
    ).toBe(false);
  });
});

describe('SecretFilter', () => {
  const filter = new SecretFilter(['tenant_pin']);

  it('drops credentials by name, however they are spelled, and keeps generation parameters', () => {
    const params = {
      apiKey: 'k',
      openAIApiKey: 'k',
      api_key: 'k',
      anthropicApiKey: 'k',
      azureOpenAIApiKey: 'k',
      credentials: { accessKeyId: 'a', secretAccessKey: 's', sessionToken: 't' },
      configuration: { defaultHeaders: { Authorization: 'Bearer x' }, baseURL: 'https://api.example' },
      tenantPin: '1234',
      maxTokens: 100,
      max_completion_tokens: 50,
      prompt_cache_key: 'shared-prefix',
      model: 'gpt-4o-mini',
      organization: 'org-1',
    };
    expect(keyable(params, filter)).toEqual({
      configuration: { baseURL: 'https://api.example' },
      maxTokens: 100,
      max_completion_tokens: 50,
      prompt_cache_key: 'shared-prefix',
      model: 'gpt-4o-mini',
      organization: 'org-1',
    });
  });

  it('drops secret-shaped values and LangChain secret markers under any name', () => {
    expect(
      keyable(
        { custom: 'sk-abcdefghijklmnopqrstuvwx', marker: { lc: 1, type: 'secret', id: ['X'] }, n: 1 },
        filter,
      ),
    ).toEqual({ n: 1 });
  });

  it('keeps tool schemas verbatim, even properties called password or token', () => {
    const tools = [
      {
        type: 'function',
        function: { name: 'login', parameters: { properties: { password: { type: 'string' }, token: {} } } },
      },
    ];
    expect(keyable({ tools }, filter)).toEqual({ tools });
  });

  it('drops the credentials a model declares in lc_secrets but keeps declared identity such as a deployment', () => {
    const declared = filter.withDeclared(['customerSeed', 'azureOpenAIApiDeploymentName']);
    expect(
      keyable({ customerSeed: 'x', azureOpenAIApiDeploymentName: 'gpt4o-prod', temperature: 0 }, declared),
    ).toEqual({
      azureOpenAIApiDeploymentName: 'gpt4o-prod',
      temperature: 0,
    });
  });

  it('redacts credentials in strings it cannot parse', () => {
    const redacted = redactLlmString('weird {"apiKey":"sk-1","model":"m"} apiKey:"x"', filter);
    expect(redacted).not.toContain('sk-1');
    expect(redacted).toContain('"model":"m"');
  });
});
