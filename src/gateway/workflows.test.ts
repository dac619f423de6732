import { describe, expect, it } from 'vitest';
import type { StepState, Workflow, WorkflowStep } from '../protocol/api.js';
import { ancestorsOf, compileWorkflow, templateRefs, timelineOf } from './workflows.js';

const step = (step_id: string, extra: Partial<WorkflowStep> = {}): WorkflowStep => ({
  step_id,
  tool_name: 'slow_echo',
  tool_args: { ms: 0 },
  ...extra,
});

const wf = (...steps: WorkflowStep[]): Workflow => ({ workflow_id: 'unit', steps });

/** The error compileWorkflow throws, or undefined when it accepts the workflow. */
function rejection(workflow: Workflow): { code: string; message: string; details: Record<string, unknown> } | undefined {
  try {
    compileWorkflow(workflow);
  } catch (err) {
    return err as { code: string; message: string; details: Record<string, unknown> };
  }
  return undefined;
}

const depsOf = (workflow: Workflow) => Object.fromEntries([...compileWorkflow(workflow).steps].map(([id, s]) => [id, s.deps]));

function state(status: StepState['status'], started_at: string | null, extra: Partial<StepState> = {}): StepState {
  return {
    status,
    task_id: started_at ? `task_${started_at}` : null,
    node_id: started_at ? 'n1' : null,
    node: started_at ? 'Node 1' : null,
    started_at,
    finished_at: null,
    duration_ms: null,
    attempts: started_at ? 1 : 0,
    verified: false,
    degraded: false,
    result_hash: null,
    execution_path: [],
    ...extra,
  };
}

describe('workflows - compileWorkflow', () => {
  it('compileWorkflow - without depends_on each step depends on the one before', () => {
    expect(depsOf(wf(step('a'), step('b'), step('c')))).toEqual({ a: [], b: ['a'], c: ['b'] });
    expect(compileWorkflow(wf(step('a'), step('b'), step('c'))).order).toEqual(['a', 'b', 'c']);
  });

  it('compileWorkflow - depends_on [] makes a root, and a later step without depends_on follows the step listed before it', () => {
    const deps = depsOf(wf(step('a'), step('b', { depends_on: [] }), step('c', { depends_on: ['a', 'b'] }), step('d')));
    expect(deps).toEqual({ a: [], b: [], c: ['a', 'b'], d: ['c'] });
  });

  it('compileWorkflow - repeated dependencies are kept once', () => {
    expect(depsOf(wf(step('a'), step('b', { depends_on: ['a', 'a'] })))).toEqual({ a: [], b: ['a'] });
  });

  it('compileWorkflow - the order puts every step after all of its dependencies, whatever the listing order', () => {
    const workflow = wf(
      step('join', { depends_on: ['left', 'right'] }),
      step('left', { depends_on: ['root'] }),
      step('right', { depends_on: ['root'] }),
      step('root', { depends_on: [] }),
      step('tail', { depends_on: ['join'] }),
    );
    const { order, steps } = compileWorkflow(workflow);
    expect([...order].sort()).toEqual(['join', 'left', 'right', 'root', 'tail']);
    for (const [id, s] of steps)
      for (const dep of s.deps) expect(order.indexOf(dep), `${dep} before ${id}`).toBeLessThan(order.indexOf(id));
    expect(order[0]).toBe('root');
    expect(order.at(-1)).toBe('tail');
  });

  it('compileWorkflow - duplicate step ids are rejected naming the id', () => {
    const err = rejection(wf(step('a'), step('b'), step('a')));
    expect(err).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', details: { workflow_id: 'unit', step_id: 'a' } });
    expect(err?.message).toContain('two steps have step_id "a"');
  });

  it('compileWorkflow - an unknown depends_on id is rejected naming the step and the id', () => {
    const err = rejection(wf(step('a'), step('b', { depends_on: ['a', 'ghost'] })));
    expect(err).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', details: { step_id: 'b', depends_on: 'ghost' } });
    expect(err?.message).toContain('step "b" depends on unknown step "ghost"');
  });

  it('compileWorkflow - a step depending on itself is rejected', () => {
    const err = rejection(wf(step('a', { depends_on: ['a'] })));
    expect(err).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', details: { step_id: 'a' } });
    expect(err?.message).toContain('depends on itself');
  });

  it('compileWorkflow - a cycle is rejected naming the steps on it', () => {
    const err = rejection(
      wf(step('root', { depends_on: [] }), step('a', { depends_on: ['root', 'c'] }), step('b', { depends_on: ['a'] }), step('c')),
    );
    expect(err).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW' });
    expect(err?.message).toContain('cycle');
    expect([...((err?.details.steps as string[] | undefined) ?? [])].sort()).toEqual(['a', 'b', 'c']);
    expect(err?.message).not.toContain('root');
  });

  it('compileWorkflow - reading a step that is not an ancestor is rejected naming the reference', () => {
    const err = rejection(
      wf(step('a', { depends_on: [] }), step('b', { depends_on: [], tool_args: { ms: 0, value: '{{steps.a.output.value}}' } })),
    );
    expect(err).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', details: { step_id: 'b', ref: 'steps.a.output.value' } });
    expect(err?.message).toContain('step "b" reads "{{steps.a.output.value}}" but does not depend on step "a"');
  });

  it('compileWorkflow - reading a later step that depends on the reader is rejected', () => {
    const err = rejection(wf(step('a', { tool_args: { ms: 0, value: '{{steps.b.output}}' } }), step('b')));
    expect(err).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', details: { step_id: 'a' } });
  });

  it('compileWorkflow - reading an ancestor through other steps is accepted', () => {
    const workflow = wf(
      step('a'),
      step('b'),
      step('c', { tool_args: { ms: 0, value: { first: '{{steps.a.output.value}}', second: 'x {{ steps.b.output }} y' } } }),
    );
    expect(rejection(workflow)).toBeUndefined();
  });

  it('compileWorkflow - a reference to a step that does not exist is rejected', () => {
    const err = rejection(wf(step('a'), step('b', { tool_args: { ms: 0, value: '{{steps.nope.output}}' } })));
    expect(err).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', details: { step_id: 'b', ref: 'steps.nope.output' } });
    expect(err?.message).toContain('unknown step');
  });

  it('compileWorkflow - a template that starts with anything but input, steps, env, item or item_index is rejected', () => {
    const err = rejection(wf(step('a', { tool_args: { ms: 0, value: '{{secrets.key}}' } })));
    expect(err).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', details: { step_id: 'a' } });
    expect(err?.message).toContain('{{secrets.key}}');
    for (const ok of ['{{input.x}}', '{{env.HOME}}', '{{item}}', '{{item_index}}', '{{input.list[0]}}']) {
      expect(rejection(wf(step('a', { tool_args: { ms: 0, value: ok } }))), ok).toBeUndefined();
    }
  });

  it('compileWorkflow - references in for_each and target are checked too', () => {
    const forEach = rejection(wf(step('a', { depends_on: [] }), step('b', { depends_on: [], for_each: '{{steps.a.output.items}}' })));
    expect(forEach).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', details: { step_id: 'b', ref: 'steps.a.output.items' } });
    const target = rejection(
      wf(step('a', { depends_on: [] }), step('b', { depends_on: [], target: { kind: 'explicit', node_id: '{{steps.a.output.node_id}}' } })),
    );
    expect(target).toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', details: { step_id: 'b', ref: 'steps.a.output.node_id' } });
    expect(rejection(wf(step('a'), step('b', { target: { kind: 'explicit', node_id: '{{steps.a.output.node_id}}' } })))).toBeUndefined();
  });
});

describe('workflows - templateRefs and ancestorsOf', () => {
  it('templateRefs - finds every reference in nested objects, arrays and longer strings, trimmed', () => {
    const refs = templateRefs({
      a: '{{ input.text }}',
      b: ['x {{steps.s1.output.value}} y {{env.NAME}}', 3, null, { c: '{{item}}' }],
      d: true,
      e: 'no template here',
    });
    expect(refs).toEqual(['input.text', 'steps.s1.output.value', 'env.NAME', 'item']);
    expect(templateRefs('plain')).toEqual([]);
    expect(templateRefs(42)).toEqual([]);
  });

  it('ancestorsOf - holds every direct and indirect dependency, each once, and never the step itself', () => {
    const compiled = compileWorkflow(
      wf(
        step('root', { depends_on: [] }),
        step('left', { depends_on: ['root'] }),
        step('right', { depends_on: ['root'] }),
        step('join', { depends_on: ['left', 'right'] }),
        step('other', { depends_on: [] }),
      ),
    );
    expect([...ancestorsOf(compiled, 'join')].sort()).toEqual(['left', 'right', 'root']);
    expect([...ancestorsOf(compiled, 'left')]).toEqual(['root']);
    expect(ancestorsOf(compiled, 'root').size).toBe(0);
    expect(ancestorsOf(compiled, 'other').size).toBe(0);
    expect(ancestorsOf(compiled, 'missing').size).toBe(0);
  });

  it('ancestorsOf - follows the implicit sequential dependencies', () => {
    const compiled = compileWorkflow(wf(step('a'), step('b'), step('c'), step('d')));
    expect([...ancestorsOf(compiled, 'd')].sort()).toEqual(['a', 'b', 'c']);
  });
});

describe('workflows - timelineOf', () => {
  it('timelineOf - lists the steps that ran or run now in the order they started, leaving out waiting and skipped ones', () => {
    const timeline = timelineOf({
      late: state('succeeded', '2024-01-01T00:00:02.000Z', { duration_ms: 5, result_hash: 'sha256:aa', verified: true }),
      early: state('failed', '2024-01-01T00:00:01.000Z', { duration_ms: 7, attempts: 2 }),
      now: state('running', '2024-01-01T00:00:03.000Z'),
      waiting: state('waiting', null),
      skipped: state('skipped', null),
    });
    expect(timeline.map((t) => [t.step, t.ok])).toEqual([
      ['early', false],
      ['late', true],
      ['now', false],
    ]);
    expect(timeline[1]).toEqual({
      step: 'late',
      node: 'Node 1',
      node_id: 'n1',
      timestamp: '2024-01-01T00:00:02.000Z',
      duration_ms: 5,
      attempts: 1,
      verified: true,
      ok: true,
      result_hash: 'sha256:aa',
      task_id: 'task_2024-01-01T00:00:02.000Z',
    });
    expect(timeline[0]).toMatchObject({ attempts: 2, duration_ms: 7 });
  });
});
